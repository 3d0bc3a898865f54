//! Documentation generated from the command line's own definition: shell completions
//! (`centinela completions bash|zsh|fish`) and the man page (`centinela man`), both
//! installed by the Debian package.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;

/// The completion script of `shell` for `centinela`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "centinela", &mut out);
    out
}

/// Sections clap does not know about: files, environment, exit status.
const EXTRA: &str = r#".SH FILES
.TP
\fI/etc/centinela/centinela.toml\fR
The configuration (else \fI$XDG_CONFIG_HOME/centinela/centinela.toml\fR, else
\fI./config/centinela.toml\fR, else the embedded default that \fBcentinela config\fR prints).
.TP
\fI/etc/centinela/centinela.env\fR
Secrets (passwords, tokens) read by systemd as root, mode 600.
.TP
\fI/var/lib/centinela/centinela.db\fR
The SQLite database: readings, rollups, alerts, the notification outbox.
.TP
\fI/lib/systemd/system/centinela.service\fR
The systemd unit; override settings with \fBsystemctl edit centinela\fR.
.SH ENVIRONMENT
.TP
\fBCENTINELA_CONFIG\fR
The configuration file, as \fB\-\-config\fR.
.TP
\fBRUST_LOG\fR
Log level or filter (e.g. \fIcentinela=debug\fR); \fB\-\-log\-level\fR wins over it.
.TP
\fBNO_COLOR\fR
When set and not empty, logs have no colours.
.TP
\fBJOURNAL_STREAM\fR
Set by systemd: when it names stderr, each log line starts with its journal priority.
.TP
\fBCENTINELA_MQTT_PASSWORD\fR, \fBCENTINELA_SMTP_PASSWORD\fR, \fBCENTINELA_TELEGRAM_TOKEN\fR, \fBCENTINELA_INFLUX_TOKEN\fR, \fBCENTINELA_INFLUX_PASSWORD\fR
Secrets named by the configuration.
.SH EXIT STATUS
0 success; 1 a failure at run time; 2 a usage error or an invalid configuration
(systemd does not restart the service on 2).
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fI/usr/share/doc/centinela/README.md\fR
"#;

/// The man page, centinela(1), in roff.
pub fn man() -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = clap_mangen::Man::new(Cli::command()).render(&mut out);
    out.extend_from_slice(EXTRA.as_bytes());
    out
}

/// Writes `bytes` to stdout; a reader that closed the pipe early (`| head`) is no error.
pub fn print(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}
