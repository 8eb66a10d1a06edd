// Formatting of what the tables and banners show. Pure.

/** Seconds as "45s", "3m 05s" or "2h 04m". */
export function formatDuration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

const LIVE_PHASES = new Set(['Pending', 'Admitted', 'Active', 'Closing']);

/** Duration of a session: the recorded one, or the time since it started while it runs. */
export function sessionDuration(session, nowMs) {
  const status = session.status || {};
  if (typeof status.durationSeconds === 'number') return status.durationSeconds;
  if (status.startedAt && LIVE_PHASES.has(session.phase)) {
    const started = Date.parse(status.startedAt);
    if (!Number.isNaN(started)) return Math.max(0, (nowMs - started) / 1000);
  }
  return null;
}

/** Whether a session is still running (or about to). */
export function isLive(phase) {
  return LIVE_PHASES.has(phase);
}

/** Exit code for a table cell; Session Manager's shell document does not report one. */
export function exitCodeText(code) {
  return typeof code === 'number' ? String(code) : 'not reported';
}

const REASONS = {
  UserExit: 'the shell exited',
  UserClosed: 'closed from the console',
  IdleTimeout: 'closed after no input for the idle limit',
  MaxDuration: 'reached the longest session the policy allows',
  AdminTerminated: 'ended on request (End, the API or kubectl)',
  ClientDisconnected: 'the browser did not come back within the reattach window',
  GatewayLost: 'the gateway that ran it stopped answering',
  ConnectionLost: 'the connection to the node was lost',
  ChannelLost: 'the connection to the node was lost',
  SsmIdleTimeout: "AWS Session Manager's idle timeout ended it",
  SsmMaxDuration: "AWS Session Manager's maximum session duration ended it",
  SsmTerminated: 'the SSM session was terminated outside nodeshell',
  CredentialsExpired: 'its AWS credentials expired and could not be renewed; sign in again and reopen',
  StartFailed: 'the shell could not start',
  TranscriptFailed: 'the transcript could not be stored',
  AttachTimeout: 'no browser attached in time',
  CapPerUser: 'you already hold the most sessions allowed',
  CapTotal: 'the policy already runs the most sessions allowed',
  PolicyDenied: 'no policy allows this node',
};

/** A reason code with its plain meaning: "IdleTimeout — closed after no input …". */
export function reasonText(reason) {
  if (!reason) return '';
  const meaning = REASONS[reason];
  return meaning ? `${reason} — ${meaning}` : reason;
}

/** The closed banner: always says the exit code (or that it was not reported) and the reason. */
export function closedText({ exitCode, reason }) {
  const code = typeof exitCode === 'number' ? `exit code ${exitCode}` : "the shell's exit status was not reported";
  const why = reason ? `: ${reasonText(reason)}` : '';
  return `Session closed — ${code}${why}`;
}

/** The idle banner. */
export function idleText(secondsRemaining) {
  const s = Math.max(0, Math.ceil(secondsRemaining));
  return `No input for a while: this shell closes in ${s} s unless you type.`;
}

/** Eligibility cell of the Nodes page: "eligible", or why not. */
export function eligibilityText(node) {
  if (node.eligible) return 'eligible';
  const error = node.error || {};
  return error.message || 'not eligible';
}

/** An API error as a person reads it: its message, then its code. */
export function errorText(error) {
  if (!error) return '';
  const message = error.message || 'Something failed.';
  return error.code ? `${message} (${error.code})` : message;
}

/** A timestamp as local "YYYY-MM-DD HH:MM:SS", or "—". */
export function formatTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '—';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
