//! The statistics as a picture for a report: exports and imports per partner per month, as
//! stacked bars (exports above the axis, imports below), in plain SVG 1.1.
//!
//! Every bar carries its figures as `data-*` attributes and a `<title>` tooltip, so the chart
//! can be checked against the numbers it shows.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kp_protocol::ParticipantCode;

use crate::report::stats::{Flow, StatsReport};

/// What the bars measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    UsDollars,
    Carats,
}

impl std::str::FromStr for Measure {
    type Err = String;
    fn from_str(s: &str) -> Result<Measure, String> {
        match s {
            "usd" | "value_usd" => Ok(Measure::UsDollars),
            "carats" => Ok(Measure::Carats),
            other => Err(format!("cannot chart {other:?}; use usd or carats")),
        }
    }
}

/// Tableau 10: distinguishable, and readable in print.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
    "#bab0ac",
];

fn esc(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&apos;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Hundredths from a decimal string of the report.
fn hundredths(s: &str) -> u128 {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<2}");
    int.parse::<u128>().unwrap_or(0) * 100 + frac[..2].parse::<u128>().unwrap_or(0)
}

/// A round step for about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}B", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// One partner's part of a month's bar: its value in hundredths, and its figures.
type Segment<'a> = (ParticipantCode, u128, &'a crate::report::stats::MonthRow);

const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Where things go: the plot area, where the axis lies (`zero`), and the scale from amounts
/// (`top` above the axis, `bottom` below, ticks every `step`) to pixels.
struct Frame {
    left: f64,
    plot_w: f64,
    plot_top: f64,
    plot_bottom: f64,
    top: f64,
    bottom: f64,
    step: f64,
    scale: f64,
    zero: f64,
}

/// The bars: for each (flow, month) the partners' segments, measured by `measure`.
fn stacks(r: &StatsReport, measure: Measure) -> BTreeMap<(Flow, String), Vec<Segment<'_>>> {
    let mut stacks: BTreeMap<(Flow, String), Vec<Segment<'_>>> = BTreeMap::new();
    for m in &r.monthly {
        let v = match measure {
            Measure::UsDollars => hundredths(&m.value_usd),
            Measure::Carats => hundredths(&m.carats),
        };
        stacks.entry((m.flow, m.month.clone())).or_default().push((m.partner, v, m));
    }
    stacks
}

/// The frame that fits the tallest export and import stacks, in a chart `plot_w` wide.
fn frame(stacks: &BTreeMap<(Flow, String), Vec<Segment<'_>>>, left: f64, plot_w: f64) -> Frame {
    let stack_max = |flow: Flow| {
        stacks
            .iter()
            .filter(|((f, _), _)| *f == flow)
            .map(|(_, s)| s.iter().map(|x| x.1).sum::<u128>())
            .max()
            .unwrap_or(0) as f64
            / 100.0
    };
    let (max_up, max_down) = (stack_max(Flow::Export), stack_max(Flow::Import));
    let step = tick_step(max_up.max(max_down));
    let top = (max_up / step).ceil().max(1.0) * step;
    // Room below the axis for imports: whole steps if there are any, else a narrow band.
    let bottom = if max_down > 0.0 { (max_down / step).ceil() * step } else { step / 2.0 };
    let (plot_top, plot_bottom) = (70.0, 500.0);
    let scale = (plot_bottom - plot_top) / (top + bottom);
    let zero = plot_top + top * scale;
    Frame { left, plot_w, plot_top, plot_bottom, top, bottom, step, scale, zero }
}

/// Renders the chart of a statistics report.
pub fn render(r: &StatsReport, measure: Measure) -> String {
    let months = r.period.months();
    let partners: Vec<ParticipantCode> = {
        let mut p: Vec<ParticipantCode> = r.monthly.iter().map(|m| m.partner).collect();
        p.sort();
        p.dedup();
        p
    };
    let colour =
        |p: ParticipantCode| PALETTE[partners.iter().position(|x| *x == p).unwrap_or(0) % PALETTE.len()];
    let stacks = stacks(r, measure);

    let (width, height) = (960.0, 560.0);
    let (left, right) = (90.0, 180.0);
    let f = frame(&stacks, left, width - left - right);
    let unit = match measure {
        Measure::UsDollars => "US$",
        Measure::Carats => "carats",
    };
    let title = format!(
        "{}: rough-diamond trade, {} ({} to {}), {unit} by month and partner",
        r.participant, r.period.label, r.period.start, r.period.end
    );

    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, "<title>{}</title>", esc(&title));
    let _ = writeln!(s, r##"<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>"##);
    let _ =
        writeln!(s, r#"<text x="{left}" y="30" font-size="16" font-weight="bold">{}</text>"#, esc(&title));
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="50" fill="#555555">Exports above the axis, imports below; certificates acknowledged and not voided, by date of issue.</text>"##
    );
    grid(&mut s, &f, unit);
    bars(&mut s, &f, &months, &stacks, &colour);
    legend(&mut s, &f, &partners, &colour);
    s.push_str("</svg>\n");
    s
}

/// The grid lines with their amounts, the unit, and which side is which.
fn grid(s: &mut String, f: &Frame, unit: &str) {
    let left = f.left;
    let mut t = -(f.bottom / f.step).floor() * f.step;
    while t <= f.top + f.step / 2.0 {
        let y = f.zero - t * f.scale;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-width="1"/>"##,
            f.left + f.plot_w,
            if t == 0.0 { "#333333" } else { "#e0e0e0" }
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            f.left - 8.0,
            y + 4.0,
            short(t.abs())
        );
        t += f.step;
    }
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" transform="rotate(-90 20 {:.1})" text-anchor="middle">{unit}</text>"#,
        (f.plot_top + f.plot_bottom) / 2.0,
        (f.plot_top + f.plot_bottom) / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333333">exports &#9650;</text>"##,
        f.left + f.plot_w - 4.0,
        f.zero - 6.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333333">imports &#9660;</text>"##,
        f.left + f.plot_w - 4.0,
        f.zero + 16.0
    );
}

/// One stacked bar per month and flow, a segment per partner, each with its figures.
fn bars(
    s: &mut String,
    f: &Frame,
    months: &[(i32, u32)],
    stacks: &BTreeMap<(Flow, String), Vec<Segment<'_>>>,
    colour: &dyn Fn(ParticipantCode) -> &'static str,
) {
    let slot = f.plot_w / months.len().max(1) as f64;
    let bar_w = (slot * 0.6).min(80.0);
    for (i, (y, m)) in months.iter().enumerate() {
        let label = format!("{y:04}-{m:02}");
        let x = f.left + slot * i as f64 + (slot - bar_w) / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} {y}</text>"#,
            x + bar_w / 2.0,
            f.plot_bottom + 34.0,
            MONTHS[(*m as usize).saturating_sub(1) % 12]
        );
        for flow in [Flow::Export, Flow::Import] {
            let mut offset = 0.0;
            for (partner, v, row) in stacks.get(&(flow, label.clone())).into_iter().flatten() {
                if *v == 0 {
                    continue;
                }
                let h = (*v as f64 / 100.0) * f.scale;
                let y = match flow {
                    Flow::Export => f.zero - offset - h,
                    Flow::Import => f.zero + offset,
                };
                offset += h;
                let flow_name = match flow {
                    Flow::Export => "export",
                    Flow::Import => "import",
                };
                let _ = writeln!(
                    s,
                    r##"<rect class="bar" x="{x:.1}" y="{y:.2}" width="{bar_w:.1}" height="{h:.2}" fill="{}" stroke="#ffffff" stroke-width="0.5" data-flow="{flow_name}" data-month="{label}" data-partner="{partner}" data-certificates="{}" data-carats="{}" data-value-usd="{}"><title>{}</title></rect>"##,
                    colour(*partner),
                    row.certificates,
                    row.carats,
                    row.value_usd,
                    esc(&format!(
                        "{flow_name} {} {partner}, {label}: {} certificate(s), {} carats, US$ {}",
                        if flow == Flow::Export { "to" } else { "from" },
                        row.certificates,
                        row.carats,
                        row.value_usd
                    ))
                );
            }
        }
    }
}

/// The partners' colours, or a note that there is nothing to show.
fn legend(
    s: &mut String,
    f: &Frame,
    partners: &[ParticipantCode],
    colour: &dyn Fn(ParticipantCode) -> &'static str,
) {
    let plot_top = f.plot_top;
    let lx = f.left + f.plot_w + 24.0;
    let _ = writeln!(s, r#"<text x="{lx}" y="{plot_top}" font-weight="bold">Partner</text>"#);
    for (i, p) in partners.iter().enumerate() {
        let y = f.plot_top + 18.0 + i as f64 * 20.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{}"/>"#,
            y - 10.0,
            colour(*p)
        );
        let _ = writeln!(s, r#"<text x="{:.1}" y="{y:.1}">{p}</text>"#, lx + 18.0);
    }
    if partners.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555555">No acknowledged certificates in this period.</text>"##,
            f.left + f.plot_w / 2.0,
            f.zero - 10.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_amounts_exact() {
        assert_eq!(tick_step(1000.0), 200.0);
        assert_eq!(tick_step(4_231_000.0), 1_000_000.0);
        assert_eq!(hundredths("4231000.05"), 423_100_005);
        assert_eq!(hundredths("7"), 700);
        assert_eq!(esc("A<B & \"C\""), "A&lt;B &amp; &quot;C&quot;");
    }
}
