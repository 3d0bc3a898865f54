//! A local stand-in of the Telegram Bot API over HTTP on 127.0.0.1, answering like the
//! real one: `/bot<token>/<Method>` (any case), `{"ok":true,"result":…}`, 401 for a
//! wrong token, 429 with `parameters.retry_after`, 403 for a chat that blocked the
//! bot, 400 for a text over 4096 characters, and getUpdates long polling over queued
//! updates (messages and callback queries).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Notify;

/// One sendMessage the stand-in accepted.
#[derive(Debug, Clone)]
pub struct Sent {
    pub chat_id: i64,
    pub message_id: i64,
    pub text: String,
    pub parse_mode: Option<String>,
    pub reply_markup: Option<Value>,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    sent: Vec<Sent>,
    /// Every call: (method in lower case, when, chat_id if any, answered status).
    calls: Vec<(String, Instant, Option<i64>, u16)>,
    blocked: HashSet<i64>,
    /// How the next sendMessage calls are answered: `Some(n)` 429 with retry_after n,
    /// `None` normally.
    rate_limits: VecDeque<Option<u32>>,
    updates: Vec<Value>,
    next_update_id: i64,
    next_message_id: i64,
    answered_callbacks: Vec<Value>,
    /// Chats getChat knows: id → title.
    chats: HashMap<i64, String>,
}

#[derive(Clone)]
pub struct Standin {
    pub url: String,
    pub token: String,
    inner: Arc<Mutex<Inner>>,
    news: Arc<Notify>,
}

#[derive(Clone)]
struct AppState {
    token: String,
    inner: Arc<Mutex<Inner>>,
    news: Arc<Notify>,
}

impl Standin {
    pub async fn start(token: &str) -> Standin {
        let inner = Arc::new(Mutex::new(Inner {
            next_update_id: 1000,
            next_message_id: 1,
            ..Default::default()
        }));
        let news = Arc::new(Notify::new());
        let state = AppState {
            token: token.to_string(),
            inner: inner.clone(),
            news: news.clone(),
        };
        let app = Router::new()
            .route("/:bot/:method", post(handle).get(handle))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Standin {
            url,
            token: token.to_string(),
            inner,
            news,
        }
    }

    pub fn block(&self, chat: i64) {
        self.inner.lock().unwrap().blocked.insert(chat);
    }

    /// The next `n` sendMessage calls are answered 429 with `retry_after` seconds.
    pub fn rate_limit(&self, n: usize, retry_after: u32) {
        let mut g = self.inner.lock().unwrap();
        for _ in 0..n {
            g.rate_limits.push_back(Some(retry_after));
        }
    }

    /// Scripts the next sendMessage answers: `None` normal, `Some(n)` 429 with retry_after n.
    pub fn script(&self, answers: &[Option<u32>]) {
        self.inner
            .lock()
            .unwrap()
            .rate_limits
            .extend(answers.iter().copied());
    }

    pub fn know_chat(&self, chat: i64, title: &str) {
        self.inner
            .lock()
            .unwrap()
            .chats
            .insert(chat, title.to_string());
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.inner.lock().unwrap().sent.clone()
    }

    pub fn sent_to(&self, chat: i64) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.chat_id == chat)
            .collect()
    }

    /// Calls of `method` (any case): when, chat id, and the HTTP status answered.
    pub fn calls(&self, method: &str) -> Vec<(Instant, Option<i64>, u16)> {
        let m = method.to_lowercase();
        self.inner
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.0 == m)
            .map(|c| (c.1, c.2, c.3))
            .collect()
    }

    pub fn answered_callbacks(&self) -> Vec<Value> {
        self.inner.lock().unwrap().answered_callbacks.clone()
    }

    /// Waits until `pred(sent)` holds or `timeout` passes; returns the messages sent.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Sent]) -> bool) -> Vec<Sent> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.sent();
            if pred(&s) || Instant::now() >= deadline {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn user(id: i64) -> Value {
        json!({"id": id, "is_bot": false, "first_name": format!("user{id}"), "username": format!("user{id}")})
    }

    fn chat(id: i64) -> Value {
        if id < 0 {
            json!({"id": id, "type": "group", "title": format!("group {id}")})
        } else {
            json!({"id": id, "type": "private", "first_name": format!("user{id}"), "username": format!("user{id}")})
        }
    }

    /// Queues a text message from a person in `chat`.
    pub fn push_message(&self, chat: i64, text: &str) {
        let mut g = self.inner.lock().unwrap();
        g.next_update_id += 1;
        g.next_message_id += 1;
        let update = json!({
            "update_id": g.next_update_id,
            "message": {
                "message_id": g.next_message_id,
                "date": 1_700_000_000,
                "chat": Self::chat(chat),
                "from": Self::user(chat.abs()),
                "text": text,
                "entities": if text.starts_with('/') {
                    json!([{"type": "bot_command", "offset": 0, "length": text.split_whitespace().next().unwrap_or("").len()}])
                } else { json!([]) },
            }
        });
        g.updates.push(update);
        drop(g);
        self.news.notify_waiters();
    }

    /// Queues a press on an inline button with `data` under `message_id` in `chat`.
    pub fn push_callback(&self, chat: i64, message_id: i64, data: &str) -> String {
        let mut g = self.inner.lock().unwrap();
        g.next_update_id += 1;
        let id = format!("cb{}", g.next_update_id);
        let update = json!({
            "update_id": g.next_update_id,
            "callback_query": {
                "id": id,
                "from": Self::user(chat.abs()),
                "chat_instance": format!("ci{chat}"),
                "data": data,
                "message": {
                    "message_id": message_id,
                    "date": 1_700_000_000,
                    "chat": Self::chat(chat),
                    "from": {"id": 42, "is_bot": true, "first_name": "centinela", "username": "centinela_bot"},
                    "text": "alert",
                }
            }
        });
        g.updates.push(update);
        drop(g);
        self.news.notify_waiters();
        id
    }
}

fn ok(result: Value) -> (StatusCode, Json<Value>) {
    (StatusCode::OK, Json(json!({"ok": true, "result": result})))
}

fn fail(code: u16, description: &str, parameters: Option<Value>) -> (StatusCode, Json<Value>) {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    (StatusCode::from_u16(code).unwrap(), Json(body))
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

async fn handle(
    State(st): State<AppState>,
    Path((bot, method)): Path<(String, String)>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let method = method.to_lowercase();
    let params: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).unwrap_or(json!({}))
    };
    let chat_id = params.get("chat_id").and_then(|c| {
        c.as_i64()
            .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
    });
    let answer = answer(&st, &bot, &method, &params, chat_id).await;
    st.inner
        .lock()
        .unwrap()
        .calls
        .push((method, Instant::now(), chat_id, answer.0.as_u16()));
    answer
}

async fn answer(
    st: &AppState,
    bot: &str,
    method: &str,
    params: &Value,
    chat_id: Option<i64>,
) -> (StatusCode, Json<Value>) {
    if bot.strip_prefix("bot") != Some(st.token.as_str()) {
        return fail(401, "Unauthorized", None);
    }
    match method {
        "getme" => ok(json!({
            "id": 42, "is_bot": true, "first_name": "centinela", "username": "centinela_bot",
            "can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false,
            "can_connect_to_business": false, "has_main_web_app": false
        })),
        "getchat" => {
            let Some(id) = chat_id else {
                return fail(400, "Bad Request: chat_id is empty", None);
            };
            let g = st.inner.lock().unwrap();
            if g.blocked.contains(&id) {
                return fail(403, "Forbidden: bot was blocked by the user", None);
            }
            match g.chats.get(&id) {
                Some(title) => {
                    let mut c = Standin::chat(id);
                    c["title"] = json!(title);
                    ok(c)
                }
                None => fail(400, "Bad Request: chat not found", None),
            }
        }
        "sendmessage" => {
            let Some(chat) = chat_id else {
                return fail(400, "Bad Request: chat_id is empty", None);
            };
            let text = params
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let mut g = st.inner.lock().unwrap();
            if let Some(after) = g.rate_limits.pop_front().flatten() {
                return fail(
                    429,
                    &format!("Too Many Requests: retry after {after}"),
                    Some(json!({"retry_after": after})),
                );
            }
            if g.blocked.contains(&chat) {
                return fail(403, "Forbidden: bot was blocked by the user", None);
            }
            if text.is_empty() {
                return fail(400, "Bad Request: message text is empty", None);
            }
            if utf16_len(&text) > 4096 {
                return fail(400, "Bad Request: message is too long", None);
            }
            g.next_message_id += 1;
            let message_id = g.next_message_id;
            g.sent.push(Sent {
                chat_id: chat,
                message_id,
                text: text.clone(),
                parse_mode: params
                    .get("parse_mode")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                reply_markup: params.get("reply_markup").cloned(),
                at: Instant::now(),
            });
            ok(json!({
                "message_id": message_id,
                "date": 1_700_000_000,
                "chat": Standin::chat(chat),
                "from": {"id": 42, "is_bot": true, "first_name": "centinela", "username": "centinela_bot"},
                "text": text,
            }))
        }
        "editmessagereplymarkup" => {
            let Some(chat) = chat_id else {
                return fail(400, "Bad Request: chat_id is empty", None);
            };
            let message_id = params
                .get("message_id")
                .and_then(Value::as_i64)
                .unwrap_or_default();
            let mut g = st.inner.lock().unwrap();
            let Some(m) = g
                .sent
                .iter_mut()
                .find(|m| m.chat_id == chat && m.message_id == message_id)
            else {
                return fail(400, "Bad Request: message to edit not found", None);
            };
            m.reply_markup = params.get("reply_markup").cloned();
            ok(json!({
                "message_id": message_id,
                "date": 1_700_000_000,
                "chat": Standin::chat(chat),
                "from": {"id": 42, "is_bot": true, "first_name": "centinela", "username": "centinela_bot"},
                "text": m.text,
            }))
        }
        "answercallbackquery" => {
            st.inner
                .lock()
                .unwrap()
                .answered_callbacks
                .push(params.clone());
            ok(json!(true))
        }
        "deletewebhook" | "setmycommands" => ok(json!(true)),
        "getupdates" => {
            let offset = params.get("offset").and_then(Value::as_i64).unwrap_or(0);
            let timeout = params.get("timeout").and_then(Value::as_u64).unwrap_or(0);
            let deadline = Instant::now() + Duration::from_secs(timeout);
            loop {
                let news = st.news.notified();
                {
                    let mut g = st.inner.lock().unwrap();
                    // Confirmed updates (id < offset) are forgotten, as Telegram does.
                    g.updates
                        .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
                    if !g.updates.is_empty() {
                        return ok(Value::Array(g.updates.clone()));
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return ok(json!([]));
                }
                let _ = tokio::time::timeout(left, news).await;
            }
        }
        _ => fail(404, "Not Found: method not found", None),
    }
}
