//! The web page's routes: login and logout, the home page (Stop buttons, kills in force,
//! pending and recent requests), one request's page, and the forms that decide, kill and
//! resume. Every form is a POST with the session's CSRF token; GETs only read.

use std::sync::Arc;
use std::time::Instant;

use airlock_approval::Verdict;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use maud::{html, Markup};
use serde::Deserialize;

use crate::approvals::{self, Which};
use crate::auth::{self, PageHuman};
use crate::control;
use crate::error::Refusal;
use crate::html::page;
use crate::state::{lock, AppState};
use crate::views;

/// The page's script and style: served from here so the CSP can say `'self'` and nothing else.
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/approvals/{id}", get(detail))
        .route("/approvals/{id}/decide", post(decide))
        .route("/kill", post(kill))
        .route("/resume", post(resume))
        .route("/live/home", get(live_home))
        .route("/live/approvals/{id}", get(live_detail))
        .route(
            "/assets/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// A refusal as a page: the sentence and a way back.
fn error_page(r: Refusal) -> Response {
    let body = html! {
        section.card.error {
            h1 { (r.status.as_u16()) " " (r.status.canonical_reason().unwrap_or("")) }
            p.message { (r.message) }
            p { a.btn href="/" { "Back to Airlock" } }
        }
    };
    (
        r.status,
        Html(page("Error", None, None, body).into_string()),
    )
        .into_response()
}

/// A refusal answered as a page.
struct PageError(Refusal);

impl From<Refusal> for PageError {
    fn from(r: Refusal) -> Self {
        PageError(r)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        error_page(self.0)
    }
}

type PageResult = Result<Response, PageError>;

fn form<T>(f: Result<Form<T>, FormRejection>) -> Result<T, PageError> {
    f.map(|Form(v)| v).map_err(|e| {
        PageError(Refusal::bad_request(format!(
            "malformed form: {}",
            e.body_text()
        )))
    })
}

// === login ===

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    token: String,
}

async fn login_form(State(state): State<Arc<AppState>>, jar: CookieJar) -> Response {
    let logged_in = jar.get(auth::cookie_name(&state)).is_some_and(|c| {
        lock(&state.sessions)
            .human(c.value(), Instant::now())
            .is_some()
    });
    if logged_in {
        return Redirect::to("/").into_response();
    }
    Html(views::login(None).into_string()).into_response()
}

async fn login(
    State(state): State<Arc<AppState>>,
    auth::Source(source): auth::Source,
    jar: CookieJar,
    f: Result<Form<LoginForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    let name = f.name.trim();
    if let Err(r) = auth::verify(&state, source, name, f.token.trim()).await {
        let status = r.status;
        return Ok((status, Html(views::login(Some(&r.message)).into_string())).into_response());
    }
    let id = lock(&state.sessions).create(name, Instant::now())?;
    tracing::info!(human = %name, "web login");
    let cookie = Cookie::build((auth::cookie_name(&state), id))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.secure_cookies)
        .path("/")
        .max_age(
            time::Duration::try_from(state.config.serve.session_ttl)
                .unwrap_or(time::Duration::hours(8)),
        )
        .build();
    Ok((jar.add(cookie), Redirect::to("/")).into_response())
}

#[derive(Deserialize)]
struct CsrfForm {
    /// Missing is a mismatch (403), not a malformed form.
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    who: PageHuman,
    jar: CookieJar,
    f: Result<Form<CsrfForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    who.check_csrf(&state, &f.csrf)?;
    lock(&state.sessions).remove(&who.session);
    let gone = Cookie::build((auth::cookie_name(&state), ""))
        .path("/")
        .build();
    Ok((jar.remove(gone), Redirect::to("/login")).into_response())
}

// === pages ===

async fn home(State(state): State<Arc<AppState>>, who: PageHuman) -> Response {
    match views::home_live(&state, &who.csrf(&state)).await {
        Ok(live) => {
            let csrf = who.csrf(&state);
            Html(views::home(&state, &who.human, &csrf, live).into_string()).into_response()
        }
        Err(r) => error_page(r),
    }
}

async fn live_home(State(state): State<Arc<AppState>>, who: PageHuman) -> Response {
    fragment(views::home_live(&state, &who.csrf(&state)).await)
}

async fn detail(
    State(state): State<Arc<AppState>>,
    who: PageHuman,
    Path(id): Path<String>,
) -> Response {
    match approvals::detail(&state, id, Some(who.human.clone())).await {
        Ok(d) => {
            let csrf = who.csrf(&state);
            Html(views::detail(&state, &who.human, &csrf, &d).into_string()).into_response()
        }
        Err(r) => error_page(r),
    }
}

async fn live_detail(
    State(state): State<Arc<AppState>>,
    _who: PageHuman,
    Path(id): Path<String>,
) -> Response {
    fragment(
        approvals::detail(&state, id, None)
            .await
            .map(|d| views::detail_live(&d)),
    )
}

fn fragment(r: Result<Markup, Refusal>) -> Response {
    match r {
        Ok(m) => Html(m.into_string()).into_response(),
        Err(r) => (r.status, r.message).into_response(),
    }
}

// === forms that change state ===

#[derive(Deserialize)]
struct DecideForm {
    /// Missing is a mismatch (403), not a malformed form.
    #[serde(default)]
    csrf: String,
    verdict: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    digest: String,
}

async fn decide(
    State(state): State<Arc<AppState>>,
    who: PageHuman,
    Path(id): Path<String>,
    f: Result<Form<DecideForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    who.check_csrf(&state, &f.csrf)?;
    let Some(verdict) = Verdict::from_name(&f.verdict) else {
        return Err(Refusal::bad_request("verdict must be approve or deny").into());
    };
    let comment = Some(f.comment).filter(|c| !c.trim().is_empty());
    let a = approvals::decide(
        &state,
        id.clone(),
        who.human,
        verdict,
        "web",
        comment,
        Some(f.digest),
    )
    .await?;
    // Back to the request's page, which shows the new state (post/redirect/get).
    Ok(Redirect::to(&format!("/approvals/{}", a.id)).into_response())
}

#[derive(Deserialize)]
struct KillForm {
    /// Missing is a mismatch (403), not a malformed form.
    #[serde(default)]
    csrf: String,
    scope: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    confirm: String,
}

async fn kill(
    State(state): State<Arc<AppState>>,
    who: PageHuman,
    f: Result<Form<KillForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    who.check_csrf(&state, &f.csrf)?;
    let target = control::target(&f.scope, Some(&f.target))?;
    if f.confirm != "yes" {
        // Without the script's second tap: ask once, on a page of its own.
        let csrf = who.csrf(&state);
        let body = views::confirm_kill(&csrf, &f.scope, &f.target, &target);
        let confirm = page("Confirm stop", Some((&who.human, &csrf)), None, body);
        return Ok(Html(confirm.into_string()).into_response());
    }
    let reason = control::reason(Some(&f.reason), &who.human)?;
    control::kill(&state, target, reason, who.human).await?;
    Ok(Redirect::to("/").into_response())
}

#[derive(Deserialize)]
struct ResumeForm {
    /// Missing is a mismatch (403), not a malformed form.
    #[serde(default)]
    csrf: String,
    scope: String,
    #[serde(default)]
    target: String,
}

async fn resume(
    State(state): State<Arc<AppState>>,
    who: PageHuman,
    f: Result<Form<ResumeForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    who.check_csrf(&state, &f.csrf)?;
    let target = control::target(&f.scope, Some(&f.target))?;
    control::resume(&state, target, who.human).await?;
    Ok(Redirect::to("/").into_response())
}

/// `Which` for the home page's two lists.
pub(crate) const HOME_LISTS: [(Which, usize); 2] = [(Which::Pending, 200), (Which::Decided, 10)];
