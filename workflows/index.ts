export { agentSession } from './agent-session.workflow';
export { scheduledRun } from './scheduled-run.workflow';
