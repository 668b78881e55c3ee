#!/usr/bin/env node
// `npx aiki …`: the CLI is TypeScript (sdk/cli.ts), run through tsx's ESM loader, so the
// package ships its sources without a build step.
import { register } from "tsx/esm/api";

register();
await import("../sdk/cli.ts");
