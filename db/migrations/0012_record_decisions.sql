-- Tool decisions in one round trip (activities/tool-decision.ts commitDecisions): a batch's events and audit rows,
-- written by one statement whatever the batch's size, with the plans of its statements cached per connection.
-- Locks in the order every other writer takes them: the sessions' rows, then the audit chain. Writes nothing, and
-- says why, when the caller must first learn something:
--   {"replayed": [ids]}  events already in the log (a request replayed after a reattach): decided the first time
--   {"tip": hash}         the chain moved since the caller hashed its rows on `expected_tip`: hash again from this one
-- and otherwise {"written": n}. `events`: [{ord, session_id, id, source_id, type, payload, trace_id}];
-- `audits`: the audit rows, chained by the caller from `expected_tip` (db/queries/audit.ts chainRows).
CREATE OR REPLACE FUNCTION agentplane_record_decisions(events jsonb, audits jsonb, expected_tip text, chain_lock bigint) RETURNS jsonb AS $$
DECLARE
  replayed jsonb;
  tip text;
  wanted int;
  found int;
  missing text;
BEGIN
  SELECT count(DISTINCT e.session_id) INTO wanted FROM jsonb_to_recordset(events) AS e(session_id text);
  PERFORM 1 FROM sessions WHERE id IN (SELECT e.session_id FROM jsonb_to_recordset(events) AS e(session_id text)) ORDER BY id FOR UPDATE;
  GET DIAGNOSTICS found = ROW_COUNT;
  IF found <> wanted THEN
    SELECT e.session_id INTO missing FROM jsonb_to_recordset(events) AS e(session_id text) WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = e.session_id) LIMIT 1;
    RAISE EXCEPTION 'session % does not exist', missing USING ERRCODE = 'foreign_key_violation';
  END IF;
  SELECT jsonb_agg(e.id) INTO replayed
    FROM jsonb_to_recordset(events) AS e(session_id text, id text, source_id text)
    WHERE EXISTS (SELECT 1 FROM session_events x WHERE x.session_id = e.session_id AND x.source_id = e.source_id);
  IF replayed IS NOT NULL THEN
    RETURN jsonb_build_object('replayed', replayed);
  END IF;
  IF jsonb_array_length(audits) > 0 THEN
    PERFORM pg_advisory_xact_lock(chain_lock);
    -- a new statement, so a new snapshot: every row committed before the lock is seen
    SELECT hash INTO tip FROM audit_log ORDER BY seq DESC LIMIT 1;
    tip := coalesce(tip, repeat('0', 64)); -- the genesis hash of an empty chain (GENESIS_HASH)
    IF tip <> expected_tip THEN
      RETURN jsonb_build_object('tip', tip);
    END IF;
  END IF;
  WITH incoming AS (
    SELECT e.ord, e.session_id, e.id, e.source_id, e.type, e.payload, e.trace_id
    FROM jsonb_to_recordset(events) AS e(ord int, session_id text, id text, source_id text, type text, payload jsonb, trace_id text)
  ),
  ins AS (
    INSERT INTO session_events (id, session_id, seq, source_id, type, payload, trace_id)
    SELECT i.id, i.session_id, s.event_seq + row_number() OVER (PARTITION BY i.session_id ORDER BY i.ord), i.source_id, i.type, i.payload, i.trace_id
    FROM incoming i JOIN sessions s ON s.id = i.session_id
    RETURNING session_id
  ),
  counts AS (SELECT session_id, count(*)::int AS n FROM ins GROUP BY session_id)
  UPDATE sessions SET event_seq = sessions.event_seq + counts.n, updated_at = now()
  FROM counts WHERE sessions.id = counts.session_id;
  -- one wake-up per session for the event streams (db/queries/events.ts), sent when this commits
  PERFORM pg_notify('agentplane_events', json_build_object('session_id', s.id, 'seq', s.event_seq)::text)
    FROM sessions s WHERE s.id IN (SELECT DISTINCT e.session_id FROM jsonb_to_recordset(events) AS e(session_id text));
  INSERT INTO audit_log (id, team_id, actor_key_id, actor_role, action, target, decision, reason, request_id, trace_id, data, created_at, prev_hash, hash)
    SELECT a.id, a.team_id, a.actor_key_id, a.actor_role, a.action, a.target, a.decision, a.reason, a.request_id, a.trace_id, a.data, a.created_at, a.prev_hash, a.hash
    FROM jsonb_to_recordset(audits) AS a(ord int, id text, team_id text, actor_key_id text, actor_role text, action text, target text, decision text, reason text, request_id text, trace_id text, data jsonb, created_at timestamptz, prev_hash text, hash text)
    ORDER BY a.ord;
  RETURN jsonb_build_object('written', jsonb_array_length(events));
END;
$$ LANGUAGE plpgsql;
