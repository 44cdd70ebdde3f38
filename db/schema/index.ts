export * from './teams';
export * from './agents';
export * from './credentials';
export * from './sessions';
export * from './ledger';
export * from './audit';
export * from './governance';
export * from './schedules';
