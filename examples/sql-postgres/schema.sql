-- The routing table, its updated_at trigger, and the NOTIFY trigger for notify_channel: routing_changes.
-- psql "$PG_DSN" -f examples/sql-postgres/schema.sql      (idempotent)
CREATE TABLE IF NOT EXISTS routing_configs (
  id          bigserial PRIMARY KEY,
  routing_key varchar(255) NOT NULL UNIQUE,
  config      text,
  created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
  updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
  deleted_at  timestamptz
);
CREATE INDEX IF NOT EXISTS routing_configs_cursor ON routing_configs (updated_at, routing_key);

CREATE OR REPLACE FUNCTION routing_configs_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := clock_timestamp();
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS routing_configs_touch ON routing_configs;
CREATE TRIGGER routing_configs_touch BEFORE UPDATE ON routing_configs
  FOR EACH ROW EXECUTE FUNCTION routing_configs_touch();

CREATE OR REPLACE FUNCTION routing_configs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify('routing_changes', '');
    RETURN NULL;
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pg_notify('routing_changes', OLD.routing_key);
  END IF;
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.routing_key IS DISTINCT FROM OLD.routing_key) THEN
    PERFORM pg_notify('routing_changes', NEW.routing_key);
  END IF;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS routing_configs_notify ON routing_configs;
CREATE TRIGGER routing_configs_notify AFTER INSERT OR UPDATE OR DELETE ON routing_configs
  FOR EACH ROW EXECUTE FUNCTION routing_configs_notify();
DROP TRIGGER IF EXISTS routing_configs_notify_truncate ON routing_configs;
CREATE TRIGGER routing_configs_notify_truncate AFTER TRUNCATE ON routing_configs
  FOR EACH STATEMENT EXECUTE FUNCTION routing_configs_notify();
