// Values that test/global-setup.ts hands to every test file through vitest's provide/inject.
import 'vitest';

declare module 'vitest' {
  export interface ProvidedContext {
    /** `host:port` of the Temporal dev server shared by the whole run (namespace `default`). */
    temporalAddress: string;
    /** the Postgres server test files create their databases on */
    databaseUrl: string;
  }
}
