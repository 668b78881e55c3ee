#!/usr/bin/env node
// `npx aiki …`: the compiled CLI (dist/cli.js). `npm run build` makes it; `prepare` runs the
// build on a git or folder install, and the published package ships it. No TypeScript loader is
// needed at run time. (In this repository, `npm run migrate` runs the sources through tsx.)
await import("../dist/cli.js");
