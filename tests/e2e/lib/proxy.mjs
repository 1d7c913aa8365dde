// A TCP proxy in front of the server that a test can cut, to give a browser a real network
// drop: `cut()` closes every connection through it, `block(true)` refuses new ones (counted in
// `refused`) until `block(false)`, `freeze()` silently stops carrying bytes on the connections
// open now (a dead link that neither side is told about; new connections still work). Pages opened on `proxy.base` talk to the server only through it.

import net from 'node:net';

export async function startProxy(upstream) {
  const target = new URL(upstream);
  const pairs = new Set();
  let blocked = false;
  let refused = 0;
  const server = net.createServer((client) => {
    if (blocked) {
      refused += 1;
      client.destroy();
      return;
    }
    const up = net.connect(Number(target.port), target.hostname);
    const pair = { client, up };
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      up.destroy();
    };
    client.on('error', drop).on('close', drop);
    up.on('error', drop).on('close', drop);
    client.pipe(up);
    up.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    /** Closes every open connection (both sides see the TCP connection end). */
    cut() {
      for (const { client, up } of pairs) {
        client.destroy();
        up.destroy();
      }
      pairs.clear();
    },
    freeze() {
      for (const { client, up } of pairs) {
        client.unpipe(up);
        up.unpipe(client);
        client.pause();
        up.pause();
      }
    },
    block(on) {
      blocked = on;
    },
    /** Connections refused while blocked. */
    get refused() {
      return refused;
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
