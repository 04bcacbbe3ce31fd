//! Panics of the libraries that encode and render one row (the `tokenizers` crate and
//! minijinja) caught where they are called, so that the row is set aside with the panic's
//! message and the run goes on: a panic is theirs to fix, but one row must not stop a run.

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs a closure under [`catch_panic`].
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

static QUIET_HOOK: Once = Once::new();

/// Runs `call` (a call into `library`); a panic inside it becomes
/// `Err("<library> panicked: <message>")`.
///
/// The panic hook prints nothing for a panic caught here (the message goes to the
/// quarantine file instead, and a bad corpus would print one per row); it prints every
/// other panic as before.
pub(super) fn catch_panic<T>(library: &str, call: impl FnOnce() -> T) -> Result<T, String> {
    QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CATCHING.get() {
                previous(info);
            }
        }));
    });
    let was_catching = CATCHING.replace(true);
    // Encoding and rendering take the tokenizer and the template by shared reference:
    // their caches aside, which only save time, a panic leaves nothing half-changed in
    // them for the next row to see.
    let result = panic::catch_unwind(AssertUnwindSafe(call));
    CATCHING.set(was_catching);
    result.map_err(|payload| format!("{library} panicked: {}", panic_message(payload.as_ref())))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::catch_panic;

    #[test]
    fn a_panic_becomes_its_message_and_the_value_passes_through() {
        assert_eq!(catch_panic("lib", || 7), Ok(7));
        let index = 9;
        let formatted = catch_panic("lib", || -> u8 { panic!("index {index} out of range") });
        assert_eq!(formatted, Err("lib panicked: index 9 out of range".to_owned()));
        let literal = catch_panic("lib", || -> u8 { panic!("static") });
        assert_eq!(literal, Err("lib panicked: static".to_owned()));
        let other = catch_panic("lib", || -> u8 { std::panic::panic_any(3_u32) });
        assert_eq!(other, Err("lib panicked: a panic without a message".to_owned()));
    }
}
