-- The routing table with server-maintained microsecond timestamps (the incremental cursor).
-- mysql routing < examples/sql-mysql/schema.sql      (idempotent)
CREATE TABLE IF NOT EXISTS routing_configs (
  id          BIGINT AUTO_INCREMENT PRIMARY KEY,
  routing_key VARCHAR(255) NOT NULL UNIQUE,
  config      LONGTEXT,
  created_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  deleted_at  DATETIME(6) NULL,
  KEY routing_configs_cursor (updated_at, routing_key)
);
