//! Authentication before any process starts: a client that is not
//! admitted never starts a child, never joins a channel, and costs no more
//! than its handshake and one bounded password check.
//!
//! `--basic-auth FILE` (HTTP Basic, RFC 7617, against an [`htpasswd`]
//! file) or `--auth-cmd PROG` (a [`command`] decides from the request's
//! CGI environment) guards every WebSocket upgrade, and with `--auth-http`
//! also the static files, CGI scripts and the dev console. What it admits
//! becomes `REMOTE_USER` and `AUTH_TYPE` for the child, as CGI/1.1 defines
//! them; Basic credentials never reach the child (no
//! `HTTP_AUTHORIZATION`).

pub mod channels;
pub mod command;
pub mod htpasswd;
pub mod jwt;
pub mod url;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use tokio::sync::Semaphore;

use crate::env::Var;
use channels::Permits;
use command::{AuthCommand, Verdict};
use htpasswd::Htpasswd;
use jwt::Jwt;
use url::{Answer, AuthUrl, Original};

/// Longest `Authorization` header looked at: a longer one is refused
/// unread (no user name or password is that long).
const MAX_CREDENTIALS: usize = 4096;

/// How long a request waits for a password-check slot before it is told
/// 503: under a flood of guesses, legitimate clients wait a little, and
/// the server's threads stay its own.
const CHECK_WAIT: Duration = Duration::from_secs(2);

/// The configured authentication.
#[derive(Debug)]
pub struct Auth {
    mechanism: Mechanism,
    /// `--auth-http`: static files, CGI and the dev console too.
    http: bool,
    /// Checks running at once, at most: each is a bcrypt or SHA-crypt
    /// computation on the blocking pool, or an `--auth-cmd` process.
    checks: Arc<Semaphore>,
}

/// Who decides.
#[derive(Debug)]
enum Mechanism {
    /// `--basic-auth`, with the challenge its 401 answers carry (`--realm`).
    Basic {
        users: Arc<Htpasswd>,
        challenge: HeaderValue,
    },
    /// `--auth-cmd`.
    Command(AuthCommand),
    /// `--auth-url`.
    Url(AuthUrl),
    /// `--jwt-key`, with the challenges of its 401s: for a request with no
    /// token, and for one whose token is refused (RFC 6750 3).
    Jwt {
        jwt: Jwt,
        challenge: HeaderValue,
        invalid: HeaderValue,
    },
}

/// The request being checked.
#[derive(Debug)]
pub struct Probe<'a> {
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub headers: &'a HeaderMap,
    /// REMOTE_ADDR, for `--auth-url`'s `X-Original-Remote-Addr`.
    pub remote_addr: &'a str,
    /// The environment an `--auth-cmd` runs with: the base, then the
    /// request's CGI variables.
    pub env: [&'a [Var]; 2],
}

/// Who was admitted, for the child's environment and the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// `REMOTE_USER`; `None` when an `--auth-cmd` named nobody.
    pub user: Option<String>,
    /// `AUTH_TYPE`: `Basic`, `Command` for `--auth-cmd`, `URL` for
    /// `--auth-url`.
    pub auth_type: &'static str,
    /// `WSPIPE_AUTH_*` variables an `--auth-cmd` or `--auth-url` gave,
    /// `WSPIPE_JWT_*` a token's claims.
    pub vars: Vec<(String, String)>,
    /// The channels the client may join; `None`: any.
    pub channels: Option<Permits>,
    /// The subprotocol the 101 answers with: the `bearer.TOKEN` a browser
    /// offered its token as.
    pub protocol: Option<HeaderValue>,
}

impl Admission {
    /// Someone the mechanism `auth_type` admitted, with no channel limit
    /// and no subprotocol.
    fn of(auth_type: &'static str, user: Option<String>, vars: Vec<(String, String)>) -> Self {
        Admission {
            user,
            auth_type,
            vars,
            channels: None,
            protocol: None,
        }
    }

    /// Whether the client may join the channel `name`.
    pub fn may_join(&self, name: &str) -> bool {
        self.channels.as_ref().is_none_or(|p| p.allows(name))
    }
}

/// Why a request was not admitted, and the answer it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: StatusCode,
    /// For the access log and the response body.
    pub reason: &'static str,
    /// `WWW-Authenticate` for a 401.
    pub challenge: Option<HeaderValue>,
}

/// Why a `--realm` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--realm {0:?}: printable characters only, no '\"' or '\\'")]
pub struct BadRealm(String);

impl Auth {
    /// HTTP Basic against `users`, with `realm` in the challenge.
    pub fn basic(users: Htpasswd, realm: &str, http: bool) -> Result<Self, BadRealm> {
        let challenge = challenge(
            &format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
            realm,
        )?;
        let users = Arc::new(users);
        Ok(Self::new(Mechanism::Basic { users, challenge }, http))
    }

    /// `--jwt-key`, with `realm` in the challenges.
    pub fn jwt(jwt: Jwt, realm: &str, http: bool) -> Result<Self, BadRealm> {
        let bearer = format!("Bearer realm=\"{realm}\"");
        let invalid = challenge(&format!("{bearer}, error=\"invalid_token\""), realm)?;
        let challenge = challenge(&bearer, realm)?;
        let mechanism = Mechanism::Jwt {
            jwt,
            challenge,
            invalid,
        };
        Ok(Self::new(mechanism, http))
    }

    /// `--auth-cmd`.
    pub fn command(command: AuthCommand, http: bool) -> Self {
        Self::new(Mechanism::Command(command), http)
    }

    /// `--auth-url`.
    pub fn url(url: AuthUrl, http: bool) -> Self {
        Self::new(Mechanism::Url(url), http)
    }

    fn new(mechanism: Mechanism, http: bool) -> Self {
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
        Auth {
            mechanism,
            http,
            checks: Arc::new(Semaphore::new(slots)),
        }
    }

    /// Whether plain HTTP requests (static files, CGI, the dev console)
    /// need admitting too, not only upgrades.
    pub fn guards_http(&self) -> bool {
        self.http
    }

    /// Whether [`check`](Self::check) needs the request's CGI variables
    /// and client address (`--auth-cmd` and `--auth-url` pass them on).
    pub fn wants_request_env(&self) -> bool {
        matches!(self.mechanism, Mechanism::Command(_) | Mechanism::Url(_))
    }

    /// Takes the credentials out of an admitted request, so that its
    /// child's environment never holds them: `Authorization`, and a JWT's
    /// other places (its `bearer.` subprotocol, its query parameter).
    pub fn scrub(&self, headers: &mut HeaderMap, uri: &mut http::Uri) {
        headers.remove(header::AUTHORIZATION);
        if let Mechanism::Jwt { jwt, .. } = &self.mechanism {
            jwt::token::scrub(headers, uri, jwt.query());
        }
    }

    /// Admits the request, or says why not.
    pub async fn check(&self, probe: &Probe<'_>) -> Result<Admission, Denial> {
        let headers = probe.headers;
        match &self.mechanism {
            Mechanism::Basic { users, challenge } => {
                let unauthorized = |reason| Denial {
                    status: StatusCode::UNAUTHORIZED,
                    reason,
                    challenge: Some(challenge.clone()),
                };
                let (user, password) = credentials(headers).map_err(unauthorized)?;
                let slot = self.slot().await?;
                let (users, name) = (users.clone(), user.clone());
                let valid = tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    users.verify(&name, &password)
                })
                .await
                .unwrap_or(false);
                if !valid {
                    return Err(unauthorized("wrong user name or password"));
                }
                Ok(Admission::of("Basic", Some(user), Vec::new()))
            }
            Mechanism::Jwt {
                jwt,
                challenge,
                invalid,
            } => match jwt.check(headers, probe.uri) {
                Ok(verified) => Ok(Admission {
                    channels: verified.channels,
                    protocol: verified.protocol,
                    ..Admission::of("Bearer", verified.user, verified.vars)
                }),
                Err(refused) => Err(Denial {
                    status: StatusCode::UNAUTHORIZED,
                    reason: refused.reason,
                    challenge: Some(
                        if refused.token_given {
                            invalid
                        } else {
                            challenge
                        }
                        .clone(),
                    ),
                }),
            },
            Mechanism::Command(command) => {
                let _slot = self.slot().await?;
                admit_by(command.run(probe.env).await)
            }
            Mechanism::Url(url) => {
                let _slot = self.slot().await?;
                let original = Original {
                    method: probe.method,
                    uri: probe.uri,
                    headers,
                    remote_addr: probe.remote_addr,
                };
                admit_by_answer(url.ask(&original).await)
            }
        }
    }

    /// A slot among the checks running at once, waited for briefly.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Denial> {
        tokio::time::timeout(CHECK_WAIT, self.checks.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(Denial {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "too many authentication checks at once",
                challenge: None,
            })
    }
}

/// What an `--auth-url` answer means for the request.
fn admit_by_answer(answer: Answer) -> Result<Admission, Denial> {
    match answer {
        Answer::Admit {
            user,
            vars,
            channels,
        } => Ok(Admission {
            channels,
            ..Admission::of("URL", user, vars)
        }),
        Answer::Refuse(status, challenge) => Err(Denial {
            status,
            reason: "refused by --auth-url",
            challenge,
        }),
        Answer::Failed(why) => {
            tracing::warn!("--auth-url failed: {why}");
            Err(Denial {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "--auth-url failed",
                challenge: None,
            })
        }
    }
}

/// What an `--auth-cmd` verdict means for the request.
fn admit_by(verdict: Verdict) -> Result<Admission, Denial> {
    match verdict {
        Verdict::Admit {
            user,
            vars,
            channels,
        } => Ok(Admission {
            channels,
            ..Admission::of("Command", user, vars)
        }),
        Verdict::Refuse => Err(Denial {
            status: StatusCode::FORBIDDEN,
            reason: "refused by --auth-cmd",
            challenge: None,
        }),
        Verdict::Failed(why) => {
            tracing::warn!("--auth-cmd failed: {why}");
            Err(Denial {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "--auth-cmd failed",
                challenge: None,
            })
        }
    }
}

/// What an admitted request adds to its child's environment: REMOTE_USER
/// and AUTH_TYPE (CGI/1.1, RFC 3875 4.1.1 and 4.1.11); nothing when no
/// authentication ran (they stay empty, as websocketd leaves them).
pub fn child_vars(admission: Option<&Admission>) -> Vec<Var> {
    let Some(a) = admission else {
        return Vec::new();
    };
    let mut vars: Vec<Var> = vec![("AUTH_TYPE".into(), a.auth_type.into())];
    if let Some(user) = &a.user {
        vars.push(("REMOTE_USER".into(), user.into()));
    }
    vars.extend(a.vars.iter().map(|(k, v)| (k.into(), v.into())));
    vars
}

/// `value` as a challenge header, when `realm` can be quoted in it.
fn challenge(value: &str, realm: &str) -> Result<HeaderValue, BadRealm> {
    let printable = realm
        .chars()
        .all(|c| !c.is_control() && c != '"' && c != '\\');
    HeaderValue::from_str(value)
        .ok()
        .filter(|_| printable && !realm.is_empty())
        .ok_or_else(|| BadRealm(realm.to_owned()))
}

/// The user name and password of a `Basic` `Authorization` header.
pub fn credentials(headers: &HeaderMap) -> Result<(String, String), &'static str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or("credentials required")?;
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    if value.len() > MAX_CREDENTIALS {
        return Err("Authorization header too long");
    }
    let text = value
        .to_str()
        .map_err(|_| "malformed Authorization header")?;
    let (scheme, token) = text
        .trim()
        .split_once(' ')
        .ok_or("malformed Authorization header")?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("not Basic credentials");
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| "malformed Basic credentials")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "Basic credentials are not UTF-8")?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("malformed Basic credentials")?;
    Ok((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn probe<'a>(headers: &'a HeaderMap, uri: &'a http::Uri) -> Probe<'a> {
        Probe {
            method: &http::Method::GET,
            uri,
            headers,
            remote_addr: "127.0.0.1",
            env: [&[], &[]],
        }
    }

    fn encoded(pair: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    #[test]
    fn credentials_are_read_from_one_basic_header() {
        let got = credentials(&basic(&encoded("alice:pa:ss wörd"))).unwrap();
        assert_eq!(got, ("alice".into(), "pa:ss wörd".into()));
        assert_eq!(
            credentials(&basic(&encoded(":"))).unwrap(),
            (String::new(), String::new())
        );
        for (value, reason) in [
            ("Bearer abc".to_owned(), "not Basic"),
            ("Basic".to_owned(), "malformed Authorization"),
            ("Basic !!!".to_owned(), "malformed Basic"),
            (encoded("no colon"), "malformed Basic"),
            (format!("Basic {}", "A".repeat(5000)), "too long"),
        ] {
            let err = credentials(&basic(&value)).unwrap_err();
            assert!(err.contains(reason), "{value:.40}: {err}");
        }
        assert_eq!(
            credentials(&HeaderMap::new()).unwrap_err(),
            "credentials required"
        );
        let mut two = basic(&encoded("a:b"));
        two.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        assert!(credentials(&two).unwrap_err().contains("more than one"));
    }

    #[test]
    fn a_realm_must_be_quotable() {
        let users = || {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("users");
            std::fs::write(&path, format!("a:{}\n", bcrypt::hash("x", 4).unwrap())).unwrap();
            Htpasswd::load(&path).unwrap()
        };
        let auth = Auth::basic(users(), "Chat room", false).unwrap();
        let Mechanism::Basic { challenge, .. } = &auth.mechanism else {
            panic!("a Basic mechanism");
        };
        assert_eq!(challenge, "Basic realm=\"Chat room\", charset=\"UTF-8\"");
        for bad in ["", "a\"b", "a\\b", "a\nb"] {
            assert!(Auth::basic(users(), bad, false).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn check_admits_the_right_password_and_refuses_the_rest_with_a_challenge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(
            &path,
            format!("alice:{}\n", bcrypt::hash("secret", 4).unwrap()),
        )
        .unwrap();
        let auth = Auth::basic(Htpasswd::load(&path).unwrap(), "wspipe", true).unwrap();
        let uri = http::Uri::from_static("/");
        let headers = basic(&encoded("alice:secret"));
        let admitted = auth.check(&probe(&headers, &uri)).await.unwrap();
        let alice = Admission::of("Basic", Some("alice".into()), Vec::new());
        assert_eq!(admitted, alice);
        for headers in [
            basic(&encoded("alice:wrong")),
            basic(&encoded("bob:secret")),
            HeaderMap::new(),
        ] {
            let denied = auth.check(&probe(&headers, &uri)).await.unwrap_err();
            assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
            assert!(denied.challenge.is_some());
        }
    }
}
