//! Moving a DA or DT value by whole days (the Modified Dates option):
//! proleptic Gregorian calendar arithmetic on day numbers, times untouched.

use crate::calendar::{civil_from_days, days_from_civil};

fn days_in_month(y: i64, m: i64) -> i64 {
    days_from_civil(
        if m == 12 { y + 1 } else { y },
        if m == 12 { 1 } else { m + 1 },
        1,
    ) - days_from_civil(y, m, 1)
}

/// `value` (a DA, or a DT whose first 8 characters are the date) moved by
/// `days`; `None` when it is not a full date (YYYYMMDD…): the caller
/// removes such a value rather than keep it unshifted.
pub fn shift(value: &str, days: i64) -> Option<String> {
    let v = value.trim_end_matches(['\0', ' ']);
    let digits = v.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| digits[r].parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let (y, m, d) = civil_from_days(days_from_civil(y, m, d) + days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    Some(format!("{y:04}{m:02}{d:02}{}", &v[8..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_move_by_whole_days() {
        assert_eq!(shift("20240301", -1).as_deref(), Some("20240229"));
        assert_eq!(shift("20230301", -1).as_deref(), Some("20230228"));
        assert_eq!(shift("20000101", -3650).as_deref(), Some("19900103"));
        assert_eq!(
            shift("20240115093000.123+0100", -15).as_deref(),
            Some("20231231093000.123+0100")
        );
        assert_eq!(shift("19700101", 0).as_deref(), Some("19700101"));
        assert_eq!(shift("2024", -1), None);
        assert_eq!(shift("20240230", -1), None);
        assert_eq!(shift("2024.01.01", -1), None);
    }
}
