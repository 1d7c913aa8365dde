// Prints a free TCP port and a free UDP port on 127.0.0.1 (for the server under test).
import net from 'node:net';
import dgram from 'node:dgram';

const tcp = await new Promise((resolve, reject) => {
  const s = net.createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});
const udp = await new Promise((resolve, reject) => {
  const s = dgram.createSocket('udp4');
  s.once('error', reject);
  s.bind(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});
console.log(`${tcp} ${udp}`);
