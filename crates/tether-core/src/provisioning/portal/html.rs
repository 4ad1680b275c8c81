//! The portal's pages: HTML templating, apart from the request handling in
//! the parent module. Every page is plain HTML with a few lines of CSS and
//! no JavaScript, rendered straight into the response buffer (a first pass
//! counts the bytes for `Content-Length`); every untrusted string goes
//! through [`Escaped`].

use core::fmt::{self, Write};

use super::super::http::{CountingWriter, SliceWriter, reason};
use super::{
    ConnectionStatus, FormState, Handled, MAX_LISTED_NETWORKS, Portal, PortalError, PortalView,
    Problem,
};

pub(super) enum Page<'p> {
    Form {
        view: &'p PortalView<'p>,
        state: &'p FormState<'p>,
        need_pairing: bool,
        have_token: bool,
    },
    Status {
        status: ConnectionStatus,
    },
    Error {
        message: &'p str,
    },
}

impl Portal<'_> {
    pub(super) fn emit(
        &self,
        out: &mut [u8],
        status: u16,
        location: Option<Location<'_>>,
        page: &Page<'_>,
        head_only: bool,
    ) -> Result<Handled, PortalError> {
        let mut counter = CountingWriter::default();
        self.render(&mut counter, page)
            .map_err(|_| PortalError::ResponseTooLarge)?;
        let mut w = SliceWriter::new(out);
        let written = (|| -> fmt::Result {
            write!(w, "HTTP/1.1 {status} {}\r\n", reason(status))?;
            w.write_str("Content-Type: text/html; charset=utf-8\r\n")?;
            write!(w, "Content-Length: {}\r\n", counter.0)?;
            if let Some(location) = location {
                write!(w, "Location: http://{}{}\r\n", location.host, location.path)?;
            }
            if status == 405 {
                // RFC 9110 15.5.6: a 405 lists the allowed methods.
                w.write_str("Allow: GET, HEAD, POST\r\n")?;
            }
            w.write_str("Cache-Control: no-store\r\nConnection: close\r\n\r\n")?;
            if !head_only {
                self.render(&mut w, page)?;
            }
            Ok(())
        })();
        let len = w.finish()?;
        written.map_err(|_| PortalError::ResponseTooLarge)?;
        Ok(Handled {
            len,
            status,
            saved: false,
            pairing_rejected: false,
        })
    }

    fn render(&self, w: &mut dyn Write, page: &Page<'_>) -> fmt::Result {
        let name = Escaped(self.config.device_name);
        let refresh = matches!(page, Page::Status { status } if !status.settled());
        w.write_str("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>")?;
        w.write_str("<meta name=viewport content=\"width=device-width,initial-scale=1\">")?;
        if refresh {
            w.write_str("<meta http-equiv=refresh content=3>")?;
        }
        write!(
            w,
            "<title>Set up {name}</title><style>{CSS}</style></head><body><main>"
        )?;
        write!(w, "<h1>Set up {name}</h1>")?;
        match page {
            Page::Form {
                view,
                state,
                need_pairing,
                have_token,
            } => render_form(w, view, state, *need_pairing, *have_token)?,
            Page::Status { status } => {
                write!(
                    w,
                    "<p class=st id=status>{}</p>",
                    Escaped(status.sentence())
                )?;
                if !status.settled() {
                    w.write_str("<p>This page updates itself.</p>")?;
                }
                if matches!(
                    status,
                    ConnectionStatus::WifiFailed | ConnectionStatus::ServerFailed
                ) {
                    w.write_str("<p><a href=\"/\">Change the settings</a></p>")?;
                }
            }
            Page::Error { message } => {
                write!(w, "<p class=err id=banner>{}</p>", Escaped(message))?;
                w.write_str("<p><a href=\"/\">Back to the set-up page</a></p>")?;
            }
        }
        w.write_str("</main></body></html>")
    }
}

pub(super) struct Location<'l> {
    pub(super) host: &'l str,
    pub(super) path: &'l str,
}

const CSS: &str = "body{font:16px system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}\
main{max-width:28em;margin:auto;padding:1em}h1{font-size:1.4em}\
fieldset{border:1px solid #ccc;border-radius:6px;margin:0 0 1em;background:#fff}\
label{display:block;margin:.5em 0 .2em}.net{margin:.2em 0}.net label{display:inline;margin:0}\
input[type=text],input[type=password],input[type=url]{width:100%;box-sizing:border-box;padding:.5em;font-size:1em}\
button{width:100%;padding:.8em;font-size:1.1em;background:#0a6cff;color:#fff;border:0;border-radius:6px}\
.err{color:#b00020;font-size:.9em;margin:.2em 0}.st{font-size:1.2em}small{color:#666}";

fn problem(w: &mut dyn Write, id: &str, p: Option<Problem>) -> fmt::Result {
    match p {
        Some(p) => write!(w, "<p class=err id=err-{id}>{}</p>", Escaped(p.message())),
        None => Ok(()),
    }
}

fn render_form(
    w: &mut dyn Write,
    view: &PortalView<'_>,
    state: &FormState<'_>,
    need_pairing: bool,
    have_token: bool,
) -> fmt::Result {
    if let Some(banner) = state.banner {
        write!(w, "<p class=err id=banner>{}</p>", Escaped(banner))?;
    }
    w.write_str("<form method=post action=\"/save\"><fieldset><legend>Wi-Fi network</legend>")?;
    let listed = view
        .networks
        .get(..MAX_LISTED_NETWORKS)
        .unwrap_or(view.networks);
    if listed.is_empty() {
        w.write_str("<p><small>No networks found. Type the name below.</small></p>")?;
    }
    let mut picked = false;
    for (i, net) in listed.iter().enumerate() {
        let checked = !picked && net.ssid == state.ssid_value;
        picked |= checked;
        write!(
            w,
            "<div class=net><input type=radio name=ssid id=n{i} value=\"{ssid}\"{checked}> \
             <label for=n{i}>{ssid} <small>{bars}{lock}</small></label></div>",
            ssid = Escaped(net.ssid),
            checked = if checked { " checked" } else { "" },
            bars = Bars(net.rssi),
            lock = if net.secured { " locked" } else { " open" },
        )?;
    }
    write!(
        w,
        "<label for=other_ssid>Other network (name)</label>\
         <input type=text id=other_ssid name=other_ssid maxlength=32 value=\"{}\">",
        Escaped(if picked { "" } else { state.ssid_value })
    )?;
    problem(w, "ssid", state.ssid)?;
    w.write_str(
        "<label for=passphrase>Password</label>\
         <input type=password id=passphrase name=passphrase maxlength=63 \
         placeholder=\"empty for an open network\">",
    )?;
    problem(w, "passphrase", state.passphrase)?;
    w.write_str("</fieldset>")?;
    if need_pairing {
        w.write_str(
            "<fieldset><legend>Pairing</legend><label for=pairing_code>Pairing code \
             (printed on the device label)</label><input type=text id=pairing_code \
             name=pairing_code maxlength=16 autocomplete=off>",
        )?;
        problem(w, "pairing_code", state.pairing_code)?;
        w.write_str("</fieldset>")?;
    }
    write!(
        w,
        "<fieldset><legend>Server</legend><label for=server_url>Server address</label>\
         <input type=text id=server_url name=server_url maxlength=128 \
         placeholder=\"wss://relay.example.com\" value=\"{}\">",
        Escaped(state.server_url_value)
    )?;
    problem(w, "server_url", state.server_url)?;
    write!(
        w,
        "<label for=device_id>Device id</label><input type=text id=device_id name=device_id \
         maxlength=64 value=\"{}\">",
        Escaped(state.device_id_value)
    )?;
    problem(w, "device_id", state.device_id)?;
    write!(
        w,
        "<label for=token>Device token</label><input type=password id=token name=token \
         maxlength=96 autocomplete=off{}>",
        if have_token {
            " placeholder=\"leave empty to keep the current token\""
        } else {
            ""
        }
    )?;
    problem(w, "token", state.token)?;
    w.write_str("</fieldset><button type=submit id=save>Save and connect</button></form>")?;
    w.write_str("<p><small><a href=\"/status\">Connection status</a></small></p>")
}

/// Signal strength as 1 to 4 bars.
struct Bars(i8);

impl fmt::Display for Bars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bars = match self.0 {
            i8::MIN..=-85 => "\u{2582}",
            -84..=-71 => "\u{2582}\u{2584}",
            -70..=-61 => "\u{2582}\u{2584}\u{2586}",
            _ => "\u{2582}\u{2584}\u{2586}\u{2588}",
        };
        f.write_str(bars)
    }
}

/// HTML-escapes text for element content and quoted attribute values.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'t>(pub &'t str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            let (plain, tail) = rest.split_at(i);
            f.write_str(plain)?;
            let mut chars = tail.chars();
            let entity = match chars.next() {
                Some('&') => "&amp;",
                Some('<') => "&lt;",
                Some('>') => "&gt;",
                Some('"') => "&quot;",
                _ => "&#39;",
            };
            f.write_str(entity)?;
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}
