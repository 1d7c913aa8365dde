// Waits until URL answers 200 (the server's /readyz), or fails when PID has exited or
// TIMEOUT_MS has passed. Usage: node wait-ready.mjs URL PID [TIMEOUT_MS]
const [url, pid, timeoutArg] = process.argv.slice(2);
const end = Date.now() + Number(timeoutArg || 30000);
for (;;) {
  try {
    process.kill(Number(pid), 0);
  } catch {
    console.error(`the server (pid ${pid}) exited before it was ready`);
    process.exit(1);
  }
  try {
    const res = await fetch(url);
    if (res.status === 200) process.exit(0);
  } catch {
    // not listening yet
  }
  if (Date.now() > end) {
    console.error(`${url} did not answer 200 in time`);
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 50));
}
