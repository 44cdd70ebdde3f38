/**
 * The gateway benchmark's model provider (test/support/model-upstream.ts) in its own OS process: what every path
 * under measurement ends at. Prints `READY <url>` when it listens.
 */
import { startModelUpstream } from '../../test/support/model-upstream';

const upstream = await startModelUpstream();
console.log(`READY ${upstream.url}`);
process.once('disconnect', () => process.exit(0));
process.once('SIGTERM', () => process.exit(0));
