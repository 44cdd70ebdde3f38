/**
 * autocannon in its own OS process, driven over IPC by bench/api.ts: the load generator shares neither an event
 * loop nor a thread with the servers it measures. Every answer's latency is kept as the float autocannon measures
 * (its own percentiles are whole milliseconds, too coarse for a bare handler).
 *
 * in:  { url, requests, connections, duration }
 * out: { samples: number[] (ms), rps, requests, errors, non2xx }
 */
import autocannon from 'autocannon';

export interface LoadOrder {
  url: string;
  requests: autocannon.Request[];
  connections: number;
  duration: number;
}

export interface LoadReport {
  samples: number[];
  rps: number;
  requests: number;
  errors: number;
  non2xx: number;
}

// the benchmark that started it is gone (finished or crashed): so is the load
process.once('disconnect', () => process.exit(0));

process.on('message', (order: LoadOrder) => {
  const samples: number[] = [];
  const instance = autocannon({ url: order.url, requests: order.requests, connections: order.connections, duration: order.duration }, (err, result) => {
    if (err) return process.send!({ error: String(err) });
    const report: LoadReport = { samples, rps: result.requests.average, requests: result.requests.total, errors: result.errors, non2xx: result.non2xx };
    process.send!(report);
  });
  instance.on('response', (_client, statusCode, _bytes, responseTime) => {
    if (statusCode >= 200 && statusCode < 300) samples.push(responseTime);
  });
});
