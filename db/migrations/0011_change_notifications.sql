-- What a process holds in memory is told when it changes, whoever changes it (the API, or an operator with psql):
-- each trigger sends a notification that goes out when the change commits (db/notifications.ts CHANNELS). The
-- trigger's arguments: the channel, and the column of the changed row that is the payload.
CREATE OR REPLACE FUNCTION agentplane_notify_change() RETURNS trigger AS $$
DECLARE
  changed jsonb;
BEGIN
  IF TG_OP = 'DELETE' THEN
    changed := to_jsonb(OLD);
  ELSE
    changed := to_jsonb(NEW);
  END IF;
  PERFORM pg_notify(TG_ARGV[0], changed ->> TG_ARGV[1]);
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER api_keys_notify AFTER UPDATE OR DELETE ON api_keys
  FOR EACH ROW EXECUTE FUNCTION agentplane_notify_change('agentplane_keys', 'id');
--> statement-breakpoint
CREATE TRIGGER teams_policy_notify AFTER UPDATE OF policy_revision ON teams
  FOR EACH ROW EXECUTE FUNCTION agentplane_notify_change('agentplane_policy', 'id');
--> statement-breakpoint
CREATE TRIGGER agents_version_notify AFTER UPDATE OF current_version ON agents
  FOR EACH ROW EXECUTE FUNCTION agentplane_notify_change('agentplane_policy', 'team_id');
