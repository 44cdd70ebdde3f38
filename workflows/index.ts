export { agentSession } from './agent-session.workflow';
