//! Certificates: each site's, the clock they are judged by, the ACME
//! account and the last order.

use drawbridge::config::{Config, HostPattern};

use super::{bad, good, note, Finding};

pub(super) fn clock(date: &str) -> Finding {
    let theirs = time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc2822);
    let Ok(theirs) = theirs else {
        return note(format!(
            "the clock was not compared: Jellyfin's Date `{date}` is not readable"
        ));
    };
    let skew = (time::OffsetDateTime::now_utc() - theirs).whole_seconds();
    if skew.abs() <= 300 {
        good(format!(
            "the clock agrees with Jellyfin's within {} s",
            skew.abs().max(1)
        ))
    } else {
        bad(
            format!("the clock is {skew} s off Jellyfin's"),
            "set the time right on both machines (`timedatectl set-ntp true`): certificates and ACME fail on a clock that is off".into(),
        )
    }
}

/// The certificate a site will serve, where doctor can read it: files and
/// stored ACME certificates (days left, names covered).
pub(super) fn certificate(config: &Config, site: &drawbridge::config::SiteConfig) -> Finding {
    use drawbridge::config::TlsSource;
    let name = site.name();
    let path = match &site.tls {
        TlsSource::Internal => {
            return good(format!(
                "site {name}: certificate from drawbridge's local CA (issued and renewed by drawbridge)"
            ))
        }
        TlsSource::Files { cert, .. } => cert.clone(),
        TlsSource::Acme => {
            let stored = drawbridge::acme::store::site_dir(&config.server.state_dir, &site.hosts)
                .join("cert.pem");
            if !stored.exists() {
                return note(format!(
                    "site {name}: no ACME certificate stored yet (drawbridge orders one when it starts; `drawbridge status` shows it)"
                ));
            }
            stored
        }
    };
    let read = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|pem| {
            let (_, block) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| e.to_string())?;
            let (_, cert) =
                x509_parser::parse_x509_certificate(&block.contents).map_err(|e| e.to_string())?;
            let names = drawbridge::certfile::dns_names(&cert);
            Ok((cert.validity().not_after.timestamp(), names))
        });
    let (until, names) = match read {
        Ok(found) => found,
        Err(why) => {
            return bad(
                format!(
                    "site {name}: the certificate {} cannot be read: {why}",
                    path.display()
                ),
                "point `tls` at a PEM certificate chain, leaf first".into(),
            )
        }
    };
    let days = (until - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
    let missing: Vec<String> = site
        .hosts
        .iter()
        .filter_map(|host| match host {
            HostPattern::Exact(host) => Some(host.clone()),
            _ => None,
        })
        .filter(|host| {
            !names.iter().any(|san| {
                san.eq_ignore_ascii_case(host)
                    || san.strip_prefix("*.").is_some_and(|rest| {
                        host.split_once('.')
                            .is_some_and(|(_, parent)| parent.eq_ignore_ascii_case(rest))
                    })
            })
        })
        .collect();
    let renew = match site.tls {
        TlsSource::Acme => {
            "drawbridge renews it 30 days ahead: look for `could not get a certificate` in its log"
        }
        _ => "replace the files (drawbridge reads them again when they change)",
    };
    if days < 0 {
        bad(
            format!(
                "site {name}: the certificate {} has expired",
                path.display()
            ),
            renew.into(),
        )
    } else if !missing.is_empty() {
        bad(
            format!(
                "site {name}: the certificate does not cover {} (it names {})",
                missing.join(", "),
                names.join(", ")
            ),
            "issue it for every name of the site, or list the names it covers".into(),
        )
    } else if days < 7 {
        bad(
            format!("site {name}: the certificate expires in {days} days"),
            renew.into(),
        )
    } else {
        good(format!(
            "site {name}: certificate valid for {days} more days, covering its names"
        ))
    }
}

/// The ACME account drawbridge keeps for the configured CA.
pub(super) fn acme_account(config: &Config) -> Finding {
    let directory = &config.acme.directory;
    let path = drawbridge::acme::store::account_path(&config.server.state_dir, directory);
    match std::fs::metadata(&path) {
        Ok(_) => good(format!("ACME account for {directory} is stored")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => note(format!(
            "no ACME account for {directory} yet (drawbridge creates it at its first order)"
        )),
        Err(error) => bad(
            format!("the ACME account {} cannot be read: {error}", path.display()),
            "run doctor as the drawbridge user (sudo -u drawbridge drawbridge doctor), or give state_dir back to it".into(),
        ),
    }
}

/// The site's last certificate order, when it failed (drawbridge notes it
/// in the site's certificate folder until an order succeeds).
pub(super) fn last_order(
    config: &Config,
    site: &drawbridge::config::SiteConfig,
) -> Option<Finding> {
    let dir = drawbridge::acme::store::site_dir(&config.server.state_dir, &site.hosts);
    let text = std::fs::read_to_string(drawbridge::acme::store::last_error_path(&dir)).ok()?;
    let (when, message) = text.trim().split_once(' ').unwrap_or(("", text.trim()));
    Some(bad(
        format!("site {}: the last certificate order failed ({when}): {message}", site.name()),
        "fix what the CA says (often DNS not pointing here, or port 80 closed by a firewall), drawbridge retries by itself, or at once after `systemctl restart drawbridge`".into(),
    ))
}
