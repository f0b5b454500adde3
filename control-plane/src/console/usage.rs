//! Usage charts of a key or a whole project: requests per bucket, stacked by outcome, as an
//! inline SVG (no script, so the strict CSP holds), with links that switch the granularity.

use std::collections::BTreeMap;

use actix_web::web;
use maud::{html, Markup};

use super::layout;
use super::session::ConsoleError;
use crate::domain::usage::{self, Granularity, Scope, UsageQuery};
use crate::ids::{KeyId, ProjectId};
use crate::state::db;
use crate::state::AppState;

/// Whose usage a chart shows.
#[derive(Debug, Clone)]
pub enum Whose {
    /// `key_...`.
    Key(KeyId),
    /// `prj_...`.
    Project(ProjectId),
}

/// The granularity named in a page's query (`?granularity=`); hours when absent or unknown.
pub fn granularity(param: Option<&str>) -> Granularity {
    match param {
        Some("minute") => Granularity::Minute,
        Some("day") => Granularity::Day,
        _ => Granularity::Hour,
    }
}

/// Bars shown and how the window reads, per granularity.
fn window(g: Granularity) -> (usize, &'static str, &'static str) {
    match g {
        Granularity::Minute => (60, "last 60 minutes", "-60 min"),
        Granularity::Hour => (24, "last 24 hours", "-24 h"),
        Granularity::Day => (30, "last 30 days", "-30 d"),
    }
}

fn color(code: &str) -> &'static str {
    match code {
        "valid" => "#2e7d32",
        "rate_limited" | "quota_exceeded" => "#ef6c00",
        _ => "#c62828",
    }
}

/// The chart for `whose` at `g`; `id` prefixes the element ids, `href` makes the link to the
/// same page at another granularity.
pub async fn chart(
    state: &web::Data<AppState>,
    whose: Whose,
    g: Granularity,
    id: &str,
    href: impl Fn(Granularity) -> String,
) -> Result<Markup, ConsoleError> {
    let (n, label, axis) = window(g);
    let bucket = g.bucket_ms();
    let (series, end) = db(state, move |c, now| {
        // The current, still filling bucket is the last bar.
        let end = now.div_euclid(bucket) * bucket + bucket;
        let q = UsageQuery {
            from: Some(end - n as i64 * bucket),
            to: Some(now),
            granularity: g,
        };
        let scope = match &whose {
            Whose::Key(k) => Scope::Key(k),
            Whose::Project(p) => Scope::Project(p),
        };
        usage::series(c, now, scope, q).map(|s| (s, end))
    })
    .await?;
    let start = end - n as i64 * bucket;
    let mut buckets: Vec<BTreeMap<&str, i64>> = vec![BTreeMap::new(); n];
    for p in &series.items {
        let i = (p.start - start).div_euclid(bucket);
        if let Some(b) = usize::try_from(i).ok().and_then(|i| buckets.get_mut(i)) {
            *b.entry(p.code.as_str()).or_default() += p.count;
        }
    }
    let max = buckets
        .iter()
        .map(|b| b.values().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h) = (480.0_f64, 160.0_f64);
    let bw = w / n as f64;
    // (x, y, height, outcome, tooltip) of each stacked segment.
    let mut bars: Vec<(f64, f64, f64, &str, String)> = Vec::new();
    for (i, b) in buckets.iter().enumerate() {
        let mut y = h;
        for (code, count) in b {
            let bar = (*count as f64) / (max as f64) * (h - 10.0);
            y -= bar;
            let tip = format!("{}: {count} {code}", layout::ts(start + i as i64 * bucket));
            bars.push((i as f64 * bw + 0.5, y, bar, code, tip));
        }
    }
    let title_id = format!("{id}-title");
    Ok(html! {
        figure.chart {
            nav.granularity aria-label="Chart granularity" {
                @for choice in [Granularity::Minute, Granularity::Hour, Granularity::Day] {
                    @if choice == g {
                        a href=(href(choice)) aria-current="true" { strong { "per " (choice.as_str()) } }
                    } @else {
                        a href=(href(choice)) { "per " (choice.as_str()) }
                    }
                }
            }
            svg #(id) viewBox=(format!("0 0 {w} {}", h + 20.0)) role="img" aria-labelledby=(title_id) {
                title #(title_id) { "Requests per " (g.as_str()) " by outcome, " (label) }
                line x1="0" y1=(h) x2=(w) y2=(h) stroke="#888" {}
                @for (x, y, bar, code, tip) in &bars {
                    rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{:.1}", (bw - 1.0).max(0.5))) height=(format!("{bar:.1}")) fill=(color(code)) {
                        title { (tip) }
                    }
                }
                text x="0" y=(h + 15.0) font-size="10" fill="#555" { (axis) }
                text x=(w - 30.0) y=(h + 15.0) font-size="10" fill="#555" { "now" }
            }
            figcaption {
                @if series.totals.is_empty() { "No requests in the " (label) "." }
                @else {
                    "Per " (g.as_str()) ", " (label) ": "
                    @for (code, count) in &series.totals { span.legend { (code) ": " (count) " " } }
                }
            }
        }
    })
}
