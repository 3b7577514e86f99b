//! The list-valued properties (`ignore-regions`, `count-lines`): items of four numbers,
//! `a,b,c,d`, separated by `;`.

use std::str::FromStr;

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
