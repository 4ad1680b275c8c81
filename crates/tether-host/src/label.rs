//! Device labels: what `tether-provision --label` prints on a device so a
//! customer can claim it with a phone.
//!
//! ```text
//!  ┌──────────────────────────────────────────┐
//!  │ ▛▀▀▜ ▗▖▝  Tether                          │   QR code: the claim URL,
//!  │ ▌▞▖▐ ▝▘▞  Scan to add this device         │   https://relay.example.com/claim#code=7M2K-9QXD-4HBT
//!  │ ▙▄▄▟ ▚▝▗  Claim code  7M2K-9QXD-4HBT      │   (the code in the fragment never reaches
//!  │           Device      sensor-7            │    a server log)
//!  └──────────────────────────────────────────┘
//! ```
//!
//! The label is an SVG file (vector: it prints sharp at any size) with the
//! QR code drawn as one path of its dark modules, and the claim code and
//! device id in text, so the code can be typed when no camera is at hand.
//! QR encoding is the `qrcode` crate's, error correction level M (15 %:
//! a scratched label still scans).

use core::fmt;
use core::fmt::Write as _;

use qrcode::{Color, EcLevel, QrCode};

/// Why a label could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LabelError {
    /// The server URL is not `ws://` or `wss://` (and no dashboard URL was
    /// given).
    ServerUrl,
    /// The dashboard URL is not `http://` or `https://`.
    DashboardUrl,
    /// The claim URL does not fit in a QR code.
    TooLong,
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LabelError::ServerUrl => {
                "the server URL must start with ws:// or wss:// (or give --dashboard-url)"
            }
            LabelError::DashboardUrl => "the dashboard URL must start with http:// or https://",
            LabelError::TooLong => "the claim URL is too long for a QR code",
        })
    }
}

impl core::error::Error for LabelError {}

/// The dashboard's address for a device's server URL: `wss://host/v1/device`
/// is served by `https://host` (`ws://` by `http://`).
pub fn dashboard_url(server_url: &str) -> Result<String, LabelError> {
    let (scheme, rest) = if let Some(rest) = server_url.strip_prefix("wss://") {
        ("https", rest)
    } else if let Some(rest) = server_url.strip_prefix("ws://") {
        ("http", rest)
    } else {
        return Err(LabelError::ServerUrl);
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(LabelError::ServerUrl);
    }
    Ok(format!("{scheme}://{authority}"))
}

/// The URL the label's QR code opens: the dashboard's claim page with the
/// code in the fragment.
pub fn claim_url(dashboard_url: &str, claim_code: &str) -> Result<String, LabelError> {
    if !(dashboard_url.starts_with("https://") || dashboard_url.starts_with("http://")) {
        return Err(LabelError::DashboardUrl);
    }
    Ok(format!(
        "{}/claim#code={claim_code}",
        dashboard_url.trim_end_matches('/')
    ))
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The QR code of `data` as an SVG path of its dark modules (one unit per
/// module) and its width in modules.
pub fn qr_path(data: &str) -> Result<(String, usize), LabelError> {
    let code =
        QrCode::with_error_correction_level(data, EcLevel::M).map_err(|_| LabelError::TooLong)?;
    let width = code.width();
    let mut path = String::new();
    for (index, color) in code.to_colors().into_iter().enumerate() {
        if color == Color::Dark {
            let _ = write!(path, "M{} {}h1v1h-1z", index % width, index / width);
        }
    }
    Ok((path, width))
}

/// The label of a device: an SVG document with the QR code of `url`, the
/// claim code and the device id in text.
pub fn label_svg(device_id: &str, claim_code: &str, url: &str) -> Result<String, LabelError> {
    let (path, modules) = qr_path(url)?;
    // The QR code with its 4-module quiet zone fills a 120 × 120 square.
    let quiet = 4;
    let side = modules + 2 * quiet;
    Ok(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="62mm" height="29mm" viewBox="0 0 256 120" font-family="Helvetica, Arial, sans-serif">
<title>Tether label: {device}</title>
<rect width="256" height="120" fill="#fff"/>
<svg x="0" y="0" width="120" height="120" viewBox="-{quiet} -{quiet} {side} {side}" shape-rendering="crispEdges"><path fill="#000" d="{path}"/></svg>
<text x="124" y="26" font-size="17" font-weight="700">Tether</text>
<text x="124" y="44" font-size="10">Scan to add this device</text>
<text x="124" y="68" font-size="9" fill="#444">Claim code</text>
<text x="124" y="84" font-size="14" font-weight="700" font-family="Menlo, Consolas, monospace">{code}</text>
<text x="124" y="102" font-size="9" fill="#444">Device</text>
<text x="124" y="114" font-size="10" font-family="Menlo, Consolas, monospace">{device}</text>
</svg>
"##,
        device = escape(device_id),
        code = escape(claim_code),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_is_where_the_devices_server_is() {
        assert_eq!(
            dashboard_url("wss://relay.example.com/v1/device"),
            Ok("https://relay.example.com".to_owned())
        );
        assert_eq!(
            dashboard_url("ws://127.0.0.1:8080/v1/device"),
            Ok("http://127.0.0.1:8080".to_owned())
        );
        assert_eq!(
            dashboard_url("https://relay.example.com"),
            Err(LabelError::ServerUrl)
        );
        assert_eq!(dashboard_url("wss:///v1"), Err(LabelError::ServerUrl));
    }

    #[test]
    fn the_claim_url_carries_the_code_in_its_fragment() {
        assert_eq!(
            claim_url("https://relay.example.com/", "7M2K-9QXD-4HBT"),
            Ok("https://relay.example.com/claim#code=7M2K-9QXD-4HBT".to_owned())
        );
        assert_eq!(
            claim_url("ftp://relay.example.com", "X"),
            Err(LabelError::DashboardUrl)
        );
    }

    #[test]
    fn the_label_shows_the_code_and_device_and_draws_the_urls_qr_code() {
        let url = "https://relay.example.com/claim#code=7M2K-9QXD-4HBT";
        let svg = label_svg("sensor-7", "7M2K-9QXD-4HBT", url).expect("a label");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains(">7M2K-9QXD-4HBT</text>"));
        assert!(svg.contains(">sensor-7</text>"));
        let (path, modules) = qr_path(url).expect("a QR code");
        assert!(svg.contains(&path));
        // Version 4 (33 × 33) at level M holds this URL; the finder
        // pattern's corner module is dark.
        assert_eq!(modules, 33);
        assert!(path.starts_with("M0 0h1v1h-1z"));
        // Another URL draws another code.
        let (other, _) =
            qr_path("https://relay.example.com/claim#code=AAAA-AAAA-AAAA").expect("a QR code");
        assert_ne!(path, other);
    }

    #[test]
    fn text_is_escaped() {
        let svg = label_svg("a<b", "&", "https://x.example/claim#code=1").expect("a label");
        assert!(svg.contains(">a&lt;b</text>") && svg.contains(">&amp;</text>"));
    }

    proptest::proptest! {
        // Each case encodes a QR code: fewer cases keep the debug build quick.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn any_text_makes_a_url_or_a_clear_error(text in ".{0,120}") {
            let _ = dashboard_url(&text);
            let _ = claim_url(&text, "7M2K-9QXD-4HBT");
            if let Ok(url) = claim_url("https://x.example", &text) {
                let _ = label_svg(&text, &text, &url);
            }
        }
    }

    #[test]
    fn data_too_long_for_a_qr_code_is_refused() {
        let url = format!("https://x.example/claim#code={}", "A".repeat(4000));
        assert_eq!(qr_path(&url), Err(LabelError::TooLong));
    }
}
