// The live shell's connection as a pure state machine. The DOM side feeds it events
// (socket opened, frames, socket closed, reattach results, user actions) and carries out
// the effects it returns (send a frame, reattach after a delay). Frames: docs/api.md.

/** How long after a drop the console keeps trying to reattach (the gateway's default grace). */
export const DEFAULT_GRACE_MS = 30_000;

/**
 * Largest WebSocket message of terminal input the console sends. The gateway closes the
 * socket (1009, E_PAYLOAD_TOO_LARGE) on a message over 64 KiB, so a paste goes in pieces
 * well under it.
 */
export const MAX_INPUT_MESSAGE = 16 * 1024;

/** Terminal input bytes as the messages to send, in order, each at most `max` bytes. */
export function inputMessages(bytes, max = MAX_INPUT_MESSAGE) {
  const messages = [];
  for (let at = 0; at < bytes.length; at += max) messages.push(bytes.subarray(at, at + max));
  return messages;
}

/** Codes of a reattach refusal that no retry can fix. */
const FINAL_REATTACH_CODES = new Set([
  'E_AUTH', 'E_REAUTH_REQUIRED', 'E_FORBIDDEN', 'E_NOT_FOUND', 'E_BAD_REQUEST', 'E_NODE_SHELL_DISABLED',
]);

/**
 * A fresh connection state for `session` (name). Phases: connecting → live ⇄ reconnecting,
 * ending in closed (the shell ended; `closed` says how) or failed (`failure` says why).
 * With `resumeToken` (a reloaded page resuming its shell: the gateway gave the token with
 * the ticket) the first socket resumes from byte 0, so the output still held is replayed.
 */
export function initialShell(session, { graceMs = DEFAULT_GRACE_MS, resumeToken = null } = {}) {
  return {
    session,
    phase: 'connecting',
    graceMs,
    offset: 0,
    acked: 0,
    resumeToken,
    resumed: Boolean(resumeToken),
    info: null,
    idle: null,
    closed: null,
    failure: null,
    notice: null,
    pendingError: null,
    droppedAt: null,
    attempts: 0,
    closing: false,
    size: null,
  };
}

/** Reattach delay after `attempts` failed tries: 0.5 s, 1 s, 2 s, then 3 s. */
export function backoffMs(attempts) {
  return Math.min(3000, 500 * 2 ** attempts);
}

/**
 * Applies `event` to `state`; returns `{ state, effects }`. Events include `output` (a
 * binary frame of `length` bytes arrived: counted for the resume offset) and `consumed` (the
 * terminal finished writing the output up to `offset`: acknowledged to the gateway with an
 * `ack` frame, which is what lets it send more). Effects:
 * `{type: 'send', frame}` (a JSON control frame), `{type: 'reattach', delayMs}` (ask for a
 * ticket, then reconnect), `{type: 'disconnect'}` (close the socket).
 */
export function step(state, event) {
  const s = { ...state };
  const effects = [];
  const ended = s.phase === 'closed' || s.phase === 'failed';
  switch (event.type) {
    case 'open':
      if (s.resumeToken) {
        effects.push({ type: 'send', frame: { type: 'resume', resumeToken: s.resumeToken, offset: s.offset } });
      }
      break;
    case 'output':
      s.offset += event.length;
      // Output after an error frame means that error did not end the shell.
      s.pendingError = null;
      break;
    case 'consumed':
      // Credit for the gateway: the total written to the terminal, never backwards (a write
      // from before a reattach ends after the resume offset already counted it).
      if (s.phase === 'live' && event.offset > s.acked && event.offset <= s.offset) {
        s.acked = event.offset;
        effects.push({ type: 'send', frame: { type: 'ack', bytes: event.offset } });
      }
      break;
    case 'text':
      return frame(s, event.text, event.now ?? 0);
    case 'socketClosed':
      if (ended) break;
      if (s.closing) {
        s.phase = 'closed';
        s.closed = s.closed || { exitCode: null, reason: 'UserClosed' };
      } else if (s.pendingError) {
        s.phase = 'failed';
        s.failure = s.pendingError;
      } else if (!s.resumeToken) {
        s.phase = 'failed';
        const origin = event.origin ? ` lists ${event.origin}` : ' lists this page\'s origin';
        s.failure = {
          code: 'E_ATTACH',
          message: `The terminal connection closed before the shell started; open a new shell. If it keeps happening, check that the gateway's allowedOrigins${origin}.`,
        };
      } else if (s.phase === 'reconnecting') {
        // A reattach socket that closed before its hello is one more failed try.
        s.idle = null;
        return step(s, { type: 'reattachFailed', now: event.now, error: { code: 'E_NETWORK', message: 'the gateway closed the connection' } });
      } else {
        s.phase = 'reconnecting';
        s.droppedAt = event.now ?? 0;
        s.attempts = 0;
        effects.push({ type: 'reattach', delayMs: backoffMs(s.attempts) });
      }
      s.idle = null;
      break;
    case 'reattachFailed': {
      if (ended) break;
      const error = event.error || {};
      s.attempts += 1;
      const waited = (event.now ?? 0) - (s.droppedAt ?? 0);
      if (FINAL_REATTACH_CODES.has(error.code)) {
        s.phase = 'failed';
        s.failure = {
          code: error.code,
          message: `The connection to the shell was lost and cannot be restored: ${error.message}`,
        };
      } else if (waited >= s.graceMs) {
        s.phase = 'failed';
        s.failure = {
          code: 'E_RECONNECT_GAVE_UP',
          message: `The connection to the shell was lost and could not be restored within ${Math.round(s.graceMs / 1000)} s; the shell has ended. Open a new shell.`,
        };
      } else {
        effects.push({ type: 'reattach', delayMs: backoffMs(s.attempts) });
      }
      break;
    }
    case 'input':
      s.idle = null;
      break;
    case 'resize':
      if (s.size && s.size.cols === event.cols && s.size.rows === event.rows) break;
      s.size = { cols: event.cols, rows: event.rows };
      if (s.phase === 'live') effects.push({ type: 'send', frame: { type: 'resize', cols: event.cols, rows: event.rows } });
      break;
    case 'reconnectNow':
      // The visible Reconnect: try at once instead of waiting for the next backoff step,
      // or once more after a give-up that the gateway might not have reached yet.
      if (!canReconnect(s)) break;
      if (s.phase === 'failed') {
        s.phase = 'reconnecting';
        s.failure = null;
        s.pendingError = null;
        s.droppedAt = event.now ?? 0;
        s.attempts = 0;
      }
      effects.push({ type: 'reattach', delayMs: 0 });
      break;
    case 'userClose':
      if (ended) break;
      if (s.phase === 'live') {
        s.closing = true;
        effects.push({ type: 'send', frame: { type: 'close' } });
      } else {
        s.phase = 'closed';
        s.closed = { exitCode: null, reason: 'UserClosed' };
        effects.push({ type: 'disconnect' });
      }
      break;
    default:
      break;
  }
  return { state: s, effects };
}

function frame(s, text, now) {
  const effects = [];
  let f;
  try {
    f = JSON.parse(text);
  } catch {
    return { state: s, effects };
  }
  switch (f && f.type) {
    case 'hello': {
      const afterReload = s.phase === 'connecting' && s.resumed;
      const wasReconnecting = s.phase === 'reconnecting' || afterReload;
      s.phase = 'live';
      s.resumeToken = f.resumeToken;
      // Output continues at `offset` (the resume offset, or later when those bytes are gone):
      // the count goes on from there, and it counts as acknowledged.
      if (Number.isSafeInteger(f.offset) && f.offset >= 0) {
        s.offset = f.offset;
        s.acked = f.offset;
      }
      s.info = { session: f.session, node: f.node, instanceId: f.instanceId, ssmSessionId: f.ssmSessionId, idleSeconds: f.idleSeconds };
      s.pendingError = null;
      s.droppedAt = null;
      s.attempts = 0;
      s.notice = afterReload
        ? 'Back on the running shell after the page reload; the output the gateway still held is replayed above.'
        : (wasReconnecting ? 'Reconnected.' : null);
      // The shell may have been told another size before the drop; say ours again.
      if (wasReconnecting && s.size) effects.push({ type: 'send', frame: { type: 'resize', cols: s.size.cols, rows: s.size.rows } });
      break;
    }
    case 'idle_warn':
      s.idle = { secondsRemaining: f.secondsRemaining, at: now };
      break;
    case 'closed':
      s.phase = 'closed';
      s.closed = { exitCode: typeof f.exitCode === 'number' ? f.exitCode : null, reason: f.reason || '' };
      s.idle = null;
      break;
    case 'error':
      // Fatal errors are followed by the socket closing; others (a refused control frame)
      // leave the shell up.
      s.pendingError = { code: f.code, message: f.message, retryable: Boolean(f.retryable) };
      s.notice = `${f.message} (${f.code})`;
      break;
    default:
      break;
  }
  return { state: s, effects };
}

/** Whether the Reconnect button shows: while reconnecting, or after a failure a retry may fix. */
export function canReconnect(state) {
  if (!state || !state.resumeToken) return false;
  if (state.phase === 'reconnecting') return true;
  return state.phase === 'failed' && Boolean(state.failure) && !FINAL_REATTACH_CODES.has(state.failure.code);
}

/** Whether closing or reloading the tab should ask first: a shell is open or coming back. */
export function warnBeforeUnload(state) {
  return Boolean(state && ['connecting', 'live', 'reconnecting'].includes(state.phase) && state.session);
}

/** Seconds left of an idle warning at `now` (ms), counting down from when it came. */
export function idleSecondsLeft(idle, now) {
  if (!idle) return null;
  return Math.max(0, idle.secondsRemaining - (now - idle.at) / 1000);
}
