//! A person signed in with an account, as the dashboard is: the session
//! cookie, the CSRF token its page read, requests with the page's origin;
//! and the minimal HTTP/1.1 client that sees the answers' headers.

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::{BoxError, Receiver, WAIT};

/// The password every test account has.
pub const PASSWORD: &str = "correct horse battery";

/// An HTTP answer: status, headers (lower-case names), JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// One HTTP/1.1 request with the given extra headers.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&Value>,
) -> Result<Answer, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    let body_text = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if body.is_some() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body_text.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&body_text);
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8(response)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .ok_or("no status")?
        .parse()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let body = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body)?
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A person in a browser: the session cookie it holds and the CSRF token
/// its page read.
#[derive(Debug, Clone)]
pub struct Person {
    pub addr: SocketAddr,
    pub cookie: String,
    pub csrf: String,
    pub account_id: i64,
}

pub fn origin(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// The `tether_session=…` pair of a `Set-Cookie` answer.
pub fn session_cookie(answer: &Answer) -> Result<String, BoxError> {
    let set = answer.header("set-cookie").ok_or("no Set-Cookie")?;
    Ok(set.split(';').next().unwrap_or_default().to_owned())
}

impl Person {
    /// The same person (cookie, CSRF token) talking to the server at
    /// `addr` (another node of a cluster), from a page of that origin.
    pub fn on(&self, addr: SocketAddr) -> Person {
        Person {
            addr,
            ..self.clone()
        }
    }

    /// Signs in from an answer that set the cookie (account made or
    /// sign-in).
    pub async fn from_answer(addr: SocketAddr, answer: &Answer) -> Result<Person, BoxError> {
        if answer.status != 200 {
            return Err(format!("not signed in: {answer:?}").into());
        }
        let cookie = session_cookie(answer)?;
        let me = send(
            addr,
            "GET",
            "/v1/members",
            &[("Cookie", cookie.clone())],
            None,
        )
        .await?;
        Ok(Person {
            addr,
            csrf: answer.body["csrf_token"]
                .as_str()
                .ok_or("no csrf token")?
                .to_owned(),
            cookie,
            account_id: me.body["you"].as_i64().ok_or("no account id")?,
        })
    }

    pub async fn create(addr: SocketAddr, email: &str, joining: Value) -> Result<Person, BoxError> {
        let mut body = json!({"email": email, "password": PASSWORD});
        if let (Some(body), Value::Object(joining)) = (body.as_object_mut(), joining) {
            body.extend(joining);
        }
        let answer = send(
            addr,
            "POST",
            "/v1/accounts",
            &[("Origin", origin(addr))],
            Some(&body),
        )
        .await?;
        Person::from_answer(addr, &answer).await
    }

    /// A read (the cookie only).
    pub async fn get(&self, path: &str) -> Result<Answer, BoxError> {
        send(
            self.addr,
            "GET",
            path,
            &[("Cookie", self.cookie.clone())],
            None,
        )
        .await
    }

    /// A GET of a text (not JSON) answer, with the cookie: the status and
    /// the raw body.
    pub async fn get_text(&self, path: &str) -> Result<(u16, String), BoxError> {
        let mut stream = TcpStream::connect(self.addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: {}\r\n\r\n",
            self.addr, self.cookie
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await??;
        let text = String::from_utf8(response)?;
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
        let status = head.split_whitespace().nth(1).ok_or("no status")?.parse()?;
        Ok((status, body.to_owned()))
    }

    /// A change, as the dashboard sends it: cookie, own origin, CSRF token.
    pub async fn change(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, BoxError> {
        send(
            self.addr,
            method,
            path,
            &[
                ("Cookie", self.cookie.clone()),
                ("Origin", origin(self.addr)),
                ("X-CSRF-Token", self.csrf.clone()),
            ],
            body,
        )
        .await
    }

    pub async fn invite(&self, role: &str) -> Result<String, BoxError> {
        let answer = self
            .change("POST", "/v1/invitations", Some(&json!({"role": role})))
            .await?;
        if answer.status != 200 {
            return Err(format!("no invitation: {answer:?}").into());
        }
        Ok(answer.body["token"].as_str().ok_or("no token")?.to_owned())
    }

    /// The receiver WebSocket as the dashboard opens it: the cookie, the
    /// page's origin, the CSRF token in a subprotocol.
    pub async fn websocket(&self) -> Result<Receiver, BoxError> {
        self.websocket_with(Some(origin(self.addr)), Some(self.csrf.clone()))
            .await
    }

    pub async fn websocket_with(
        &self,
        origin: Option<String>,
        csrf: Option<String>,
    ) -> Result<Receiver, BoxError> {
        let mut request = format!("ws://{}/v1/receiver", self.addr).into_client_request()?;
        let headers = request.headers_mut();
        headers.insert("cookie", HeaderValue::from_str(&self.cookie)?);
        if let Some(origin) = origin {
            headers.insert("origin", HeaderValue::from_str(&origin)?);
        }
        let protocols = match csrf {
            Some(token) => format!("tether.v1, tether-csrf.{token}"),
            None => "tether.v1".to_owned(),
        };
        headers.insert("sec-websocket-protocol", HeaderValue::from_str(&protocols)?);
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Receiver { ws })
    }
}
