//! Input: keys and mouse turned into state changes and [`Action`]s for the shell.

use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::Position;

use crate::model::{Control, Timestamp};

use super::{Action, Alert, App, Areas, Detail, Focus, Popup, Range, Silence};

impl App {
    /// Handles a key; returns what the shell must do, if anything.
    pub fn on_key(&mut self, key: KeyEvent, now: Timestamp) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        self.now = self.now.max(now);
        self.prepare();
        self.dirty = true;
        if key.modifiers.contains(KeyModifiers::CONTROL) && matches!(key.code, KeyCode::Char('c')) {
            return Some(Action::Quit);
        }
        if let Some(popup) = self.popup.take() {
            return self.on_popup_key(popup, key);
        }
        match key.code {
            KeyCode::Char('q') => return Some(Action::Quit),
            KeyCode::Char('?') | KeyCode::F(1) => self.popup = Some(Popup::Help),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-(self.page() as isize)),
            KeyCode::PageDown => self.move_by(self.page() as isize),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX / 2),
            KeyCode::Tab if self.detail.is_none() => self.cycle_focus(true),
            KeyCode::BackTab if self.detail.is_none() => self.cycle_focus(false),
            KeyCode::Enter if self.detail.is_none() => return self.open_detail(),
            KeyCode::Esc => {
                if self.detail.take().is_none() && self.filter.take().is_some() {
                    self.order_stale = true;
                }
            }
            KeyCode::Char('/') => {
                self.popup = Some(Popup::Filter {
                    input: self.filter.clone().unwrap_or_default(),
                })
            }
            KeyCode::Char('o') => {
                self.sort = self.sort.next();
                self.order_stale = true;
            }
            KeyCode::Char('O') => {
                self.reverse = !self.reverse;
                self.order_stale = true;
            }
            KeyCode::Char('a') => return self.ack(),
            KeyCode::Char('s') => self.ask_silence(),
            KeyCode::Char('u') => return self.unsilence(),
            KeyCode::Char(c @ '1'..='3') if self.detail.is_some() => {
                let range = Range::ALL[(c as u8 - b'1') as usize];
                let d = self.detail.as_mut()?;
                d.range = range;
                d.history = None;
                return Some(Action::LoadDetail {
                    series: d.series.clone(),
                    since: self.now - range.millis(),
                });
            }
            _ => self.dirty = false,
        }
        None
    }

    fn on_popup_key(&mut self, popup: Popup, key: KeyEvent) -> Option<Action> {
        match popup {
            Popup::Help => {
                if !matches!(
                    key.code,
                    KeyCode::Esc | KeyCode::Char('?' | 'q') | KeyCode::Enter | KeyCode::F(1)
                ) {
                    self.popup = Some(Popup::Help);
                }
                None
            }
            Popup::Event(line) => {
                if !matches!(key.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q')) {
                    self.popup = Some(Popup::Event(line));
                }
                None
            }
            Popup::Filter { mut input } => {
                match key.code {
                    KeyCode::Enter => {
                        let f = input.trim();
                        self.filter = (!f.is_empty()).then(|| f.to_string());
                        self.order_stale = true;
                        self.sel[0] = 0;
                        self.offset[0] = 0;
                        return None;
                    }
                    KeyCode::Esc => {
                        self.filter = None;
                        self.order_stale = true;
                        return None;
                    }
                    KeyCode::Backspace => {
                        input.pop();
                    }
                    KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        input.clear()
                    }
                    KeyCode::Char(c) if input.len() < 200 => input.push(c),
                    _ => {}
                }
                self.popup = Some(Popup::Filter { input });
                None
            }
            Popup::Silence {
                mut input,
                targets,
                mut target,
                mut error,
            } => {
                match key.code {
                    KeyCode::Esc => return None,
                    KeyCode::Enter => match input.parse::<crate::config::Duration>() {
                        Ok(d) if !d.is_zero() => {
                            let pattern = targets[target].clone();
                            let until = self.now.saturating_add(d.as_millis());
                            self.silences.push(Silence {
                                pattern: pattern.clone(),
                                until,
                            });
                            self.order_stale = true;
                            self.notice(format!("silence sent: {pattern} for {d}"));
                            return Some(Action::Control(Control::Silence {
                                pattern,
                                until,
                                reason: "silenced from the terminal".to_string(),
                                by: self.opts.by.clone(),
                            }));
                        }
                        Ok(_) => error = Some("the duration must be longer than zero".to_string()),
                        Err(_) => {
                            error = Some(format!("{input:?} is not a duration: try 30m, 1h, 2d"))
                        }
                    },
                    KeyCode::Tab => target = (target + 1) % targets.len(),
                    KeyCode::Backspace => {
                        input.pop();
                        error = None;
                    }
                    KeyCode::Char(c) if input.len() < 40 => {
                        input.push(c);
                        error = None;
                    }
                    _ => {}
                }
                self.popup = Some(Popup::Silence {
                    input,
                    targets,
                    target,
                    error,
                });
                None
            }
        }
    }

    /// Handles a mouse event: a click selects the row under it (a click on the
    /// selected series opens it), the wheel moves the selection of the pane under it.
    pub fn on_mouse(&mut self, ev: MouseEvent, now: Timestamp) -> Option<Action> {
        self.now = self.now.max(now);
        self.prepare();
        if self.popup.is_some() || self.too_small() {
            return None;
        }
        let areas = self.areas();
        let at = Position::new(ev.column, ev.row);
        let pane = if self.detail.is_some() {
            return None;
        } else if areas.series.contains(at) {
            Focus::Series
        } else if areas.alerts.contains(at) {
            Focus::Alerts
        } else if areas.log.contains(at) {
            Focus::Log
        } else {
            return None;
        };
        match ev.kind {
            MouseEventKind::ScrollUp => {
                self.focus = pane;
                self.move_by(-1);
            }
            MouseEventKind::ScrollDown => {
                self.focus = pane;
                self.move_by(1);
            }
            MouseEventKind::Down(MouseButton::Left) => {
                let area = [areas.series, areas.alerts, areas.log][pane as usize];
                // Border, then the header row for the two tables.
                let first = area.y + if pane == Focus::Log { 1 } else { 2 };
                if ev.row < first || ev.row + 1 >= area.bottom() {
                    self.focus = pane;
                    self.dirty = true;
                    return None;
                }
                let i = self.offset[pane as usize] + (ev.row - first) as usize;
                let len = [self.order.len(), self.alert_order.len(), self.log.len()][pane as usize];
                if i >= len {
                    self.focus = pane;
                    self.dirty = true;
                    return None;
                }
                let again = self.focus == pane && self.sel[pane as usize] == i;
                self.focus = pane;
                self.sel[pane as usize] = i;
                if pane == Focus::Series {
                    self.selected_name = self.order.get(i).cloned();
                }
                self.dirty = true;
                if again && pane != Focus::Log {
                    return self.open_detail();
                }
            }
            _ => return None,
        }
        None
    }

    fn page(&self) -> usize {
        let a = self.areas();
        match self.focus {
            Focus::Series => Areas::table_rows(a.series),
            Focus::Alerts => Areas::table_rows(a.alerts),
            Focus::Log => Areas::list_rows(a.log),
        }
        .max(1)
    }

    fn move_by(&mut self, d: isize) {
        if self.detail.is_some() {
            return;
        }
        let i = self.focus as usize;
        let len = [self.order.len(), self.alert_order.len(), self.log.len()][i];
        self.sel[i] = self.sel[i]
            .saturating_add_signed(d)
            .min(len.saturating_sub(1));
        if self.focus == Focus::Series {
            self.selected_name = self.order.get(self.sel[0]).cloned();
        }
        self.clamp_all();
    }

    fn cycle_focus(&mut self, forward: bool) {
        self.focus = match (self.focus, forward) {
            (Focus::Series, true) | (Focus::Log, false) => Focus::Alerts,
            (Focus::Alerts, true) | (Focus::Series, false) => Focus::Log,
            (Focus::Log, true) | (Focus::Alerts, false) => Focus::Series,
        };
    }

    fn open_detail(&mut self) -> Option<Action> {
        let series = match self.focus {
            Focus::Series => self.selected_series()?.to_string(),
            Focus::Alerts => self.selected_alert()?.series.clone(),
            Focus::Log => {
                let line = self.log.get(self.sel[2])?.clone();
                self.popup = Some(Popup::Event(line));
                return None;
            }
        };
        let range = Range::M5;
        self.detail = Some(Detail {
            series: series.clone(),
            range,
            history: None,
        });
        Some(Action::LoadDetail {
            series,
            since: self.now - range.millis(),
        })
    }

    /// The alert `a` and `s` act on: the selected one in the alerts pane, else the
    /// loudest open alert of the selected (or shown) series.
    fn target_alert(&self) -> Option<&Alert> {
        if self.detail.is_none() && self.focus == Focus::Alerts {
            return self.selected_alert();
        }
        let series = match &self.detail {
            Some(d) => d.series.as_str(),
            None => self.selected_series()?,
        };
        self.alerts_of(series)
            .max_by_key(|a| (a.is_firing(), a.severity, a.since))
    }

    fn ack(&mut self) -> Option<Action> {
        let Some(a) = self.target_alert() else {
            self.notice("no alert here to acknowledge".to_string());
            return None;
        };
        if !a.is_firing() {
            let msg = format!("{} is {}, not firing", a.id(), a.state);
            self.notice(msg);
            return None;
        }
        let alert = a.id();
        self.notice(format!("acknowledgement sent: {alert}"));
        Some(Action::Control(Control::Ack {
            alert,
            by: self.opts.by.clone(),
        }))
    }

    fn silence_targets(&self) -> Vec<String> {
        let alert = self.target_alert();
        let series = match (&self.detail, self.focus, alert) {
            (Some(d), _, _) => Some(d.series.clone()),
            (None, Focus::Alerts, Some(a)) => Some(a.series.clone()),
            (None, _, _) => self.selected_series().map(str::to_string),
        };
        let mut out: Vec<String> = series.into_iter().collect();
        if let Some(a) = alert {
            if !out.contains(&a.rule) {
                out.push(a.rule.clone());
            }
        }
        out
    }

    fn ask_silence(&mut self) {
        let targets = self.silence_targets();
        if targets.is_empty() {
            self.notice("nothing selected to silence".to_string());
            return;
        }
        self.popup = Some(Popup::Silence {
            input: "1h".to_string(),
            targets,
            target: 0,
            error: None,
        });
    }

    fn unsilence(&mut self) -> Option<Action> {
        let pattern = self.silence_targets().into_iter().next()?;
        self.silences.retain(|s| s.pattern != pattern);
        self.engine_silences.retain(|s| s.pattern != pattern);
        self.order_stale = true;
        self.notice(format!("unsilence sent: {pattern}"));
        Some(Action::Control(Control::Unsilence {
            pattern: Some(pattern),
            by: self.opts.by.clone(),
        }))
    }

    pub fn notice(&mut self, msg: String) {
        self.flash = Some((msg, self.now));
        self.dirty = true;
    }
}
