/**
 * The `sql` source (PostgreSQL and MySQL/MariaDB): the driver, its options and their defaults are documented
 * in ./sql/index.ts; the two server dialects are ./sql/postgres.ts and ./sql/mysql.ts.
 */
export { factory, SqlDriver, type SqlOptions } from './sql/index.ts';
