//! Property and option strings: sizes (`WxH`), and the list-valued properties
//! (`ignore-regions`, `count-lines`): items of four numbers, `a,b,c,d`, separated by `;`.

use std::str::FromStr;

/// "WxH" (or "WXH", spaces around either number allowed) → (W, H), both at least 1; the error
/// quotes `s`.
pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("`{s}` is not WxH (e.g. 640x384)");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: usize = w.trim().parse().map_err(|_| bad())?;
    let h: usize = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 {
        return Err(bad());
    }
    Ok((w, h))
}

/// Parses the `;`-separated items of `spec`, four numbers of type `T` each, and makes each into
/// an `R` with `make` (which may refuse it with a reason). Errors name `property`, the item and
/// the reason; `fields` names the four numbers (e.g. "x,y,width,height"). Empty: no items.
pub fn parse_quads<T: FromStr + Copy, R>(
    spec: &str,
    property: &str,
    fields: &str,
    make: impl Fn([T; 4]) -> Result<R, String>,
) -> Result<Vec<R>, String> {
    spec.split(';')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let bad = |why: &str| format!("{property}: `{item}`: {why}");
            let v: Vec<T> = item
                .split(',')
                .map(|n| n.trim().parse::<T>())
                .collect::<Result<_, _>>()
                .map_err(|_| bad(&format!("expected four numbers of pixels, {fields}")))?;
            let quad: [T; 4] = v
                .try_into()
                .map_err(|_| bad(&format!("expected four numbers, {fields}")))?;
            make(quad).map_err(|why| bad(&why))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("640x384"), Ok((640, 384)));
        assert_eq!(parse_size("640 X 384"), Ok((640, 384)));
        assert!(parse_size("640").is_err());
        assert!(parse_size("0x3").is_err());
    }
}
