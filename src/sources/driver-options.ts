import type { OptionReader } from '../config/options.ts';

/**
 * Options several store drivers share, read by one rule each: `host:port` addresses, the `tls_*` file block
 * and timeouts where 0 means "the default" (the Go module's convention). `initial_load_timeout` is not here:
 * the registry reads it once for every store (registry.ts).
 */

export interface HostPort {
  /** Host name or address; an IPv6 address without its brackets. */
  host: string;
  port: number;
}

const HOST_PORT = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:/[\]@]+))(?::(\d{1,5}))?$/;

/**
 * The one `host:port` rule: a host (no `:`, `/` or spaces) or an IPv6 address in brackets, and a port 1–65535.
 * With `defaultPort` the port may be left out. Returns the problem as text when `spec` breaks the rule.
 */
export function parseHostPort(spec: string, defaultPort?: number): HostPort | { problem: string } {
  const m = HOST_PORT.exec(spec.trim());
  const host = m?.[1] ?? m?.[2];
  if (!m || host === undefined || (m[3] === undefined && defaultPort === undefined)) {
    return { problem: `must be host:port (IPv6 in brackets), got ${JSON.stringify(spec)}` };
  }
  const port = m[3] === undefined ? (defaultPort as number) : Number(m[3]);
  if (port < 1 || port > 65535) return { problem: `port must be 1-65535, got ${port} in ${JSON.stringify(spec)}` };
  return { host, port };
}

/** `parseHostPort`, failing on `field` (e.g. `servers[2]`) with its problem. */
export function readHostPort(options: OptionReader, field: string, spec: string, defaultPort?: number): HostPort {
  const hp = parseHostPort(spec, defaultPort);
  return 'problem' in hp ? options.fail(field, hp.problem) : hp;
}

/** The `tls_*` file block: paths as given (read when connecting, or with `readTlsPem` at config time). */
export interface TlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  skipVerify: boolean;
}

/**
 * Reads `tls_ca_file`, `tls_cert_file` + `tls_key_file` (together or neither) and `tls_skip_verify`.
 * `implied` is true when any of them asks for TLS (a file or skip-verify), which turns TLS on for etcd and Redis.
 */
export function readTlsFiles(options: OptionReader): { files: TlsFiles; implied: boolean } {
  const caFile = options.string('tls_ca_file') || undefined;
  const certFile = options.string('tls_cert_file') || undefined;
  const keyFile = options.string('tls_key_file') || undefined;
  const skipVerify = options.bool('tls_skip_verify', false);
  if (certFile !== undefined && keyFile === undefined)
    options.fail('tls_key_file', 'is required when tls_cert_file is set (client certificate and key go together)');
  if (keyFile !== undefined && certFile === undefined)
    options.fail('tls_cert_file', 'is required when tls_key_file is set (client certificate and key go together)');
  // read now: an unreadable file is a start error, not a connection failure retried forever
  for (const f of ['tls_ca_file', 'tls_cert_file', 'tls_key_file']) options.readableFile(f);
  const files: TlsFiles = { ...(caFile ? { caFile } : {}), ...(certFile ? { certFile } : {}), ...(keyFile ? { keyFile } : {}), skipVerify };
  return { files, implied: caFile !== undefined || certFile !== undefined || skipVerify };
}

/** The files of a TLS block read now (at config time), an unreadable one failing on its option. */
export function readTlsPem(options: OptionReader): { ca?: Buffer; cert?: Buffer; key?: Buffer } {
  const ca = options.fileContents('tls_ca_file');
  const cert = options.fileContents('tls_cert_file');
  const key = options.fileContents('tls_key_file');
  return { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
}

/** A timeout where 0 (or leaving it out) means `defaultMs`, as in the Go module's `dial_timeout`, `read_timeout`… */
export function readTimeout(options: OptionReader, name: string, defaultMs: number): number {
  return options.duration(name, defaultMs) || defaultMs;
}
