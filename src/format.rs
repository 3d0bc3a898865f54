//! Numbers and units as people read them, the same everywhere: the command line's
//! tables (`alerts`, `readings`, `replay`), alert messages and notifications, the log
//! and the terminal UI. Pure.
//!
//! A number is rounded to [`SIGNIFICANT`] significant digits (never fewer than its
//! integer digits) and printed in the shortest form that reads back as that rounded
//! value: `4.09925`, not `4.0992500000000005`; `-0.36`, not `-0.35999999999999943`;
//! `1013.68` and `73.4` side by side; `0.00042`. Very large and very small magnitudes
//! use an exponent (`1.5e20`, `4.2e-7`). A unit follows after a space: `3.901 V`,
//! `21.8 °C`.

/// Significant digits kept: more than any sensor here measures, few enough to hide
/// the noise of binary floating point.
pub const SIGNIFICANT: usize = 6;

/// Magnitudes from here up are written with an exponent.
const EXP_ABOVE: f64 = 1e15;
/// Magnitudes below this (and above zero) are written with an exponent.
const EXP_BELOW: f64 = 1e-4;

/// A number: [`SIGNIFICANT`] significant digits at most, shortest form.
pub fn num(v: f64) -> String {
    num_sig(v, SIGNIFICANT)
}

/// A number in at most `width` characters where it can be done: fewer significant
/// digits first, then an exponent (`1.2346e8`). For the narrow columns of the
/// terminal UI.
pub fn num_within(v: f64, width: usize) -> String {
    for sig in (1..=SIGNIFICANT).rev() {
        let s = num_sig(v, sig);
        if s.chars().count() <= width {
            return s;
        }
    }
    for sig in (1..=SIGNIFICANT).rev() {
        let s = exp_sig(v, sig);
        if s.chars().count() <= width {
            return s;
        }
    }
    exp_sig(v, 1)
}

/// A number and its unit after a space (`3.901 V`); the number alone without a unit.
pub fn with_unit(v: f64, unit: Option<&str>) -> String {
    join_unit(num(v), unit)
}

/// [`with_unit`] for an optional value: empty when there is none.
pub fn opt_with_unit(v: Option<f64>, unit: Option<&str>) -> String {
    v.map_or_else(String::new, |v| with_unit(v, unit))
}

/// `text` followed by the unit after a space, when there is a unit.
pub fn join_unit(text: String, unit: Option<&str>) -> String {
    match unit.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => format!("{text} {u}"),
        None => text,
    }
}

fn num_sig(v: f64, sig: usize) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(EXP_BELOW..EXP_ABOVE).contains(&a) {
        return exp_sig(v, sig);
    }
    let int_digits = a.log10().floor() as i32 + 1;
    let decimals = (sig as i32 - int_digits).max(0) as usize;
    let rounded = format!("{v:.decimals$}");
    // Display of an f64 is the shortest text that reads back as it.
    let s = match rounded.parse::<f64>() {
        Ok(r) => r.to_string(),
        Err(_) => rounded,
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

fn exp_sig(v: f64, sig: usize) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let rounded = format!("{v:.prec$e}", prec = sig.saturating_sub(1));
    match rounded.parse::<f64>() {
        Ok(r) => format!("{r:e}"),
        Err(_) => rounded,
    }
}

/// How a column of a [`table`] is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A plain-text table: columns as wide as their widest cell, two spaces between them,
/// text left-aligned and figures right-aligned as `align` says; the last column is not
/// padded. `header` may be empty (no header line).
pub fn table(header: &[&str], align: &[Align], rows: &[Vec<String>]) -> String {
    let cols = header
        .len()
        .max(rows.iter().map(Vec::len).max().unwrap_or(0));
    let mut width = vec![0usize; cols];
    let cells = |row: &[String]| row.iter().map(|c| c.chars().count()).collect::<Vec<_>>();
    for (i, h) in header.iter().enumerate() {
        width[i] = width[i].max(h.chars().count());
    }
    for row in rows {
        for (i, n) in cells(row).into_iter().enumerate() {
            width[i] = width[i].max(n);
        }
    }
    let mut out = String::new();
    let mut line = |row: &[&str]| {
        let mut s = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = width[i].saturating_sub(cell.chars().count());
            let right = align.get(i).copied() == Some(Align::Right);
            if right {
                s.extend(std::iter::repeat_n(' ', pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                if i + 1 < row.len() {
                    s.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    if !header.is_empty() {
        line(header);
    }
    for row in rows {
        let r: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        let table: &[(f64, &str)] = &[
            // Binary noise is gone.
            (4.099_250_000_000_000_5, "4.09925"),
            (-0.359_999_999_999_999_43, "-0.36"),
            (0.1 + 0.2, "0.3"),
            (31.200_000_001, "31.2"),
            // Decimals as measured, no padding zeros.
            (1013.68, "1013.68"),
            (73.40, "73.4"),
            (21.76, "21.76"),
            (3.901, "3.901"),
            (30.0, "30"),
            (-3.5, "-3.5"),
            // Small values keep their digits (notifications printed 0.00042 as 0).
            (0.000_42, "0.00042"),
            (0.004_2, "0.0042"),
            (0.123_456_789, "0.123457"),
            // Integer digits are never rounded away.
            (1_234_567.8, "1234568"),
            (987_654_321.0, "987654321"),
            // Extremes take an exponent.
            (1.5e20, "1.5e20"),
            (-1e-7, "-1e-7"),
            (4.2e-5, "4.2e-5"),
            (123_456_789_012_345_680.0, "1.23457e17"),
            // Zero has no sign.
            (0.0, "0"),
            (-0.0, "0"),
            (-0.000_000_4, "-4e-7"),
            (f64::INFINITY, "inf"),
        ];
        for (v, want) in table {
            assert_eq!(num(*v), *want, "{v:?}");
        }
    }

    #[test]
    fn narrow_columns_lose_digits_before_they_lose_magnitude() {
        let table: &[(f64, usize, &str)] = &[
            (1013.68, 8, "1013.68"),
            (1013.68, 5, "1014"),
            (21.5, 8, "21.5"),
            (0.000_42, 8, "0.00042"),
            (12_345_678.0, 8, "12345678"),
            (123_456_789.0, 8, "1.2346e8"),
            (-123_456_789.0, 8, "-1.235e8"),
            (0.123_456_789, 6, "0.1235"),
        ];
        for (v, w, want) in table {
            assert_eq!(num_within(*v, *w), *want, "{v:?} in {w}");
        }
    }

    #[test]
    fn units_follow_after_a_space() {
        assert_eq!(with_unit(3.901, Some("V")), "3.901 V");
        assert_eq!(with_unit(21.8, Some("°C")), "21.8 °C");
        assert_eq!(with_unit(40.0, Some("%")), "40 %");
        assert_eq!(with_unit(1.0, Some(" ")), "1");
        assert_eq!(with_unit(1.0, None), "1");
        assert_eq!(opt_with_unit(None, Some("V")), "");
    }

    #[test]
    fn tables_align_text_left_and_figures_right() {
        let rows = vec![
            vec!["a".to_string(), "1013.68".to_string(), "hPa".to_string()],
            vec!["longer".to_string(), "73.4".to_string(), "%".to_string()],
        ];
        let t = table(
            &["NAME", "VALUE", "UNIT"],
            &[Align::Left, Align::Right, Align::Left],
            &rows,
        );
        assert_eq!(
            t,
            "NAME      VALUE  UNIT\na       1013.68  hPa\nlonger     73.4  %\n"
        );
    }
}
