// Where the SDK says what happens: a worker's start and stop, lost and recovered connections,
// failed claims, task and run failures with their causes, and the lines workflows write through
// `run.logger`. Any object with info, warn and error works (console, pino, winston); the client
// takes it as its `logger` option, console by default, `false` for silence.

export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

const nothing = () => {};
const silent: Logger = { info: nothing, warn: nothing, error: nothing };

/** The logger a client's `logger` option names: console when unset, a silent one for false. */
export function resolveLogger(option: Logger | false | undefined): Logger {
  if (option === false) return silent;
  if (option === undefined) {
    // console.info(message, undefined) would print "undefined": pass fields only when given.
    const write = (level: "info" | "warn" | "error") => (message: string, fields?: Record<string, unknown>) =>
      fields === undefined ? console[level](`aiki: ${message}`) : console[level](`aiki: ${message}`, fields);
    return { info: write("info"), warn: write("warn"), error: write("error") };
  }
  return option;
}
