// GraphQL for the dashboard: queries and mutations over fetch, subscriptions
// over one WebSocket speaking graphql-transport-ws. The session cookie that
// /login set goes with both (same origin); nothing else is sent anywhere.

/** An error from the API, with hangar's code and hint when it gave them. */
export class ApiError extends Error {
  constructor(message, code, hint, status, context) {
    super(message);
    this.code = code || 'HTTP_' + (status || 0);
    this.hint = hint || '';
    this.status = status || 0;
    this.context = context || {};
  }
}

function fromGraphql(errors, status) {
  const e = errors[0] || {};
  const x = e.extensions || {};
  return new ApiError(e.message || 'request failed', x.code, x.hint, status, x.context);
}

/** Run a query or mutation; resolves with `data`, rejects with ApiError. */
export async function gql(query, variables = {}) {
  let r;
  try {
    r = await fetch('/graphql', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ query, variables }),
    });
  } catch (e) {
    throw new ApiError('the daemon does not answer: ' + e.message, 'DAEMON_UNREACHABLE',
      'is `hangar serve` running?');
  }
  let body;
  try {
    body = await r.json();
  } catch (_) {
    throw new ApiError('the daemon answered ' + r.status + ' without JSON', null, null, r.status);
  }
  if (body.errors && body.errors.length) throw fromGraphql(body.errors, r.status);
  if (!r.ok) throw new ApiError('the daemon answered ' + r.status, null, null, r.status);
  return body.data;
}

const PROTOCOL = 'graphql-transport-ws';

/**
 * Subscriptions share one socket, opened on the first and closed after the
 * last. A dropped socket is opened again (after 1 s, then up to 10 s), and
 * each live subscription is sent again with `variables()` called anew, so a
 * stream that resumes from an event id picks up where it stopped.
 */
class Socket {
  constructor() {
    this.ws = null;
    this.acked = false;
    this.subs = new Map();
    this.next = 1;
    this.retry = 1000;
    this.timer = null;
    this.onstate = () => {};
  }

  open() {
    if (this.ws) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(scheme + '://' + location.host + '/graphql', PROTOCOL);
    this.ws = ws;
    this.acked = false;
    ws.onopen = () => ws.send(JSON.stringify({ type: 'connection_init', payload: {} }));
    ws.onmessage = (m) => this.message(m.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.acked = false;
      this.onstate(false);
      if (this.subs.size && !this.timer) {
        this.timer = setTimeout(() => {
          this.timer = null;
          this.open();
        }, this.retry);
        this.retry = Math.min(this.retry * 2, 10000);
      }
    };
  }

  message(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (_) {
      return;
    }
    const sub = msg.id !== undefined ? this.subs.get(msg.id) : null;
    switch (msg.type) {
      case 'connection_ack':
        this.acked = true;
        this.retry = 1000;
        this.onstate(true);
        for (const [id, s] of this.subs) this.start(id, s);
        break;
      case 'ping':
        this.ws.send(JSON.stringify({ type: 'pong' }));
        break;
      case 'next':
        if (!sub) break;
        if (msg.payload.errors && msg.payload.errors.length) {
          sub.error(fromGraphql(msg.payload.errors, 0));
        } else {
          sub.next(msg.payload.data);
        }
        break;
      case 'error':
        if (sub) {
          this.subs.delete(msg.id);
          sub.error(fromGraphql(msg.payload || [], 0));
        }
        break;
      case 'complete':
        if (sub) {
          this.subs.delete(msg.id);
          sub.complete();
        }
        break;
    }
  }

  start(id, s) {
    this.ws.send(JSON.stringify({
      id, type: 'subscribe', payload: { query: s.query, variables: s.variables() },
    }));
  }

  add(s) {
    const id = String(this.next++);
    this.subs.set(id, s);
    if (this.ws && this.acked) this.start(id, s);
    else this.open();
    return () => {
      if (!this.subs.delete(id)) return;
      if (this.ws && this.acked) this.ws.send(JSON.stringify({ id, type: 'complete' }));
      if (!this.subs.size && this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.close(1000);
      }
    };
  }
}

export const socket = new Socket();

/**
 * Subscribe: `handlers.next(data)` per frame, `error(ApiError)`,
 * `complete()`. `variables` is an object, or a function called at each
 * (re)subscribe. Returns a function that ends the subscription.
 */
export function subscribe(query, variables, handlers) {
  const vars = typeof variables === 'function' ? variables : () => variables || {};
  return socket.add({
    query,
    variables: vars,
    next: handlers.next || (() => {}),
    error: handlers.error || (() => {}),
    complete: handlers.complete || (() => {}),
  });
}
