-- What a process holds in memory is told when it changes, whoever changes it (the API, or an operator with psql):
-- each trigger sends a notification that goes out when the change commits (db/notifications.ts CHANNELS).
CREATE OR REPLACE FUNCTION agentplane_notify_key_change() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('agentplane_keys', CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER api_keys_notify AFTER UPDATE OR DELETE ON api_keys
  FOR EACH ROW EXECUTE FUNCTION agentplane_notify_key_change();
--> statement-breakpoint
CREATE OR REPLACE FUNCTION agentplane_notify_team_policy_change() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('agentplane_policy', NEW.id);
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER teams_policy_notify AFTER UPDATE OF policy_revision ON teams
  FOR EACH ROW EXECUTE FUNCTION agentplane_notify_team_policy_change();
--> statement-breakpoint
CREATE OR REPLACE FUNCTION agentplane_notify_agent_version_change() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('agentplane_policy', NEW.team_id);
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER agents_version_notify AFTER UPDATE OF current_version ON agents
  FOR EACH ROW EXECUTE FUNCTION agentplane_notify_agent_version_change();
