/**
 * The ZeroMQ transport honours the same contract as the in-memory one. Method: the shared suite
 * (test/unit/transport-contract.ts) on a world of real ZeroMQ transports bound on loopback inside
 * this process; a "crash" closes a rank's sockets abruptly, which its peers see as a dropped
 * TCP connection.
 */
import { describeTransportContract } from '../unit/transport-contract.js';
import { ZmqTransport } from '../../src/comm/zmq-transport.js';

describeTransportContract('zeromq', async (size) => {
  const transports = await Promise.all(
    [...Array(size).keys()].map((rank) => ZmqTransport.bind(rank, '127.0.0.1', { lingerMs: 0 })),
  );
  for (const t of transports) for (const peer of transports) t.addPeer(peer.rank, peer.endpoint);
  return {
    transports,
    crash: async (rank) => {
      await transports[rank]!.close();
    },
    close: async () => {
      await Promise.all(transports.map((t) => t.close()));
    },
  };
});
