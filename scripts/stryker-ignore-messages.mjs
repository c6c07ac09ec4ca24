// Stryker ignorer plugin (stryker.config.mjs `ignorers: ['messages']`, issue 20): skips mutants
// inside text written only for people — the message argument of an error factory
// (host/base/errors.ts) or of `new Error(...)`, and the arguments of `log.<level>(...)` calls.
// Such a mutant changes wording, never behaviour: the error's code, fields and the decision to
// throw stay mutated (the call itself, its condition and its other arguments are not skipped).
// Listed in reports/mutation/README.md "Exclusions".
import { PluginKind, declareValuePlugin } from '@stryker-mutator/api/plugin';

/** Callee name → index of its message argument. */
const MESSAGE_ARG = new Map([
  ['timeoutError', 0], ['abortedError', 0], ['peerLostError', 0], ['protocolError', 0],
  ['invalidArgument', 0], ['pluginUnavailable', 0], ['destroyedError', 0], ['authError', 0],
  ['mismatchError', 0], ['internalError', 0], ['missingVariableError', 1], ['withContext', 1],
  ['GroupcommError', 1], ['Error', 0], ['TypeError', 0], ['RangeError', 0],
  ['Violation', 0], // host/store/table.ts: a client's protocol violation (its connection is closed)
]);
const LOG_LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error']);

/** `log.debug(...)` or `this.log.debug(...)`. */
function isLogCall(callee) {
  if (callee?.type !== 'MemberExpression' || callee.property?.type !== 'Identifier') return false;
  if (!LOG_LEVELS.has(callee.property.name)) return false;
  const o = callee.object;
  return (o.type === 'Identifier' && o.name === 'log') ||
    (o.type === 'MemberExpression' && o.object.type === 'ThisExpression' && o.property?.name === 'log');
}

const ignorer = {
  shouldIgnore(path) {
    if (path.listKey !== 'arguments') return undefined;
    const call = path.parent;
    if (call?.type !== 'CallExpression' && call?.type !== 'NewExpression') return undefined;
    if (isLogCall(call.callee)) return 'log text (scripts/stryker-ignore-messages.mjs)';
    const name = call.callee?.type === 'Identifier' ? call.callee.name : undefined;
    if (name !== undefined && MESSAGE_ARG.get(name) === path.key) return 'error message text (scripts/stryker-ignore-messages.mjs)';
    return undefined;
  },
};

export const strykerPlugins = [declareValuePlugin(PluginKind.Ignore, 'messages', ignorer)];
