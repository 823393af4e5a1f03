//! The rules of a cart, once: a line holds at most [`MAX_LINE_QUANTITY`] units and never more
//! than the stock (though a line already above it may shrink), a cart holds at most
//! [`MAX_LINES`] SKUs in one currency, and a merge adds the guest's lines to the user's, each at
//! most the cap and the stock but never below what the user had.
//!
//! The SQL store applies these functions inside its transaction. The Redis store cannot call
//! Rust from inside its atomic step, so its Lua scripts (`store/redis.rs`) spell the same rules
//! out again; one table of cases (`store/tests.rs`) runs against these functions and both
//! stores, so the three cannot drift apart.

/// Most units of one SKU in a cart.
pub const MAX_LINE_QUANTITY: i64 = 99;
/// Most distinct SKUs in a cart.
pub const MAX_LINES: usize = 100;

/// How a line changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Adds units to the line.
    Add,
    /// Sets the line's quantity (0 removes it).
    Set,
}

/// What the store knows of the cart at the moment of a change to one of its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cart<'a> {
    /// The currency its lines are priced in; only binding while it has lines.
    pub currency: Option<&'a str>,
    /// Distinct SKUs in it.
    pub lines: usize,
    /// Units of the changed SKU in it now.
    pub current: i64,
}

/// A change to one line, with what the catalog says of the SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    pub quantity: i64,
    pub mode: Mode,
    /// Units available now.
    pub available: i64,
    /// The currency the SKU is priced in.
    pub currency: &'a str,
}

/// Why a change is refused; the cart is left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The line would pass the cap; it holds `current`.
    OverCap { current: i64 },
    /// The line would pass the available stock; it holds `current`.
    OverStock { current: i64 },
    /// The cart is priced in another currency.
    OtherCurrency { cart: String },
    /// The line would be new, and the cart holds [`MAX_LINES`] already.
    TooManyLines,
}

/// The line's new quantity (0: the line goes), or why the change is refused.
pub fn change_line(cart: Cart<'_>, change: Change<'_>) -> Result<i64, Refusal> {
    if let Some(currency) = cart.currency
        && currency != change.currency
        && cart.lines > 0
    {
        return Err(Refusal::OtherCurrency { cart: currency.to_owned() });
    }
    let wanted = match change.mode {
        Mode::Add => cart.current + change.quantity,
        Mode::Set => change.quantity,
    };
    if cart.current == 0 && wanted > 0 && cart.lines >= MAX_LINES {
        return Err(Refusal::TooManyLines);
    }
    if wanted > 0 {
        if wanted > MAX_LINE_QUANTITY {
            return Err(Refusal::OverCap { current: cart.current });
        }
        if wanted > change.available && wanted > cart.current {
            return Err(Refusal::OverStock { current: cart.current });
        }
    }
    Ok(wanted.max(0))
}

/// A merged line: the sum, at most the cap and the stock, but never below what the user had.
pub fn merged_quantity(mine: i64, guest: i64, available: i64) -> i64 {
    (mine + guest).min(MAX_LINE_QUANTITY).min(available.max(mine))
}

/// The user cart's currency when the two carts cannot be merged: both have lines, priced in
/// different currencies.
pub fn merge_conflict(guest: (Option<&str>, bool), user: (Option<&str>, bool)) -> Option<String> {
    match (guest, user) {
        ((Some(g), true), (Some(u), true)) if g != u => Some(u.to_owned()),
        _ => None,
    }
}
