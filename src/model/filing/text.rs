//! The input limits every free-text field of a filing keeps: a length cap in
//! characters, no control characters (CR, LF, NUL, …), no bidirectional overrides or
//! isolates (which make a name read differently from what is stored), and at least
//! one visible character.
//!
//! Contract: [`check_text`] names the field by its path in the filing object
//! (`website.owner.name`, `reason`) and never quotes the value: it may be personal
//! data, or text made to corrupt a log line.

use super::details::DetailError;

/// Longest entity, website or contact name, in characters.
pub const NAME_MAX_CHARS: usize = 100;
/// Longest review, cancellation or other step reason, in characters.
pub const REASON_MAX_CHARS: usize = 1_000;

/// Check `value` (already trimmed or not) as the field at `field`.
pub(crate) fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), DetailError> {
    if value.chars().count() > max {
        return Err(DetailError::TooLong { field, max });
    }
    if value.chars().any(char::is_control) {
        return Err(DetailError::ControlCharacter { field });
    }
    if value.chars().any(is_bidi_control) {
        return Err(DetailError::BidiControl { field });
    }
    if !value.trim().is_empty() && value.chars().all(is_invisible) {
        return Err(DetailError::Invisible { field });
    }
    Ok(())
}

/// Bidirectional embeddings, overrides, isolates and marks (Unicode Bidi_Control).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that print nothing: white space, zero-width and format characters,
/// fillers. A name made only of these looks blank in every list.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200D}'
                | '\u{2060}'..='\u{2064}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_refuse_what_corrupts_a_list_or_a_log() {
        let field = "website.name";
        let too_long = "名".repeat(NAME_MAX_CHARS + 1);
        let cases: Vec<(&str, Result<(), DetailError>)> = vec![
            // plain Chinese and Latin text
            ("示例旺铺 Shop", Ok(())),
            // exactly at the cap (multi-byte counted as one)
            (&too_long[3..], Ok(())),
            // one over the cap
            (&too_long, Err(DetailError::TooLong { field, max: 100 })),
            // CR/LF: header or log injection
            (
                "旺铺\r\nX-Evil: 1",
                Err(DetailError::ControlCharacter { field }),
            ),
            // NUL and tab are control characters too
            ("a\0b", Err(DetailError::ControlCharacter { field })),
            ("a\tb", Err(DetailError::ControlCharacter { field })),
            // a right-to-left override makes the name read backwards
            ("abc\u{202E}gpj", Err(DetailError::BidiControl { field })),
            // an isolate
            ("\u{2066}x\u{2069}", Err(DetailError::BidiControl { field })),
            // only zero-width spaces
            ("\u{200B}\u{200B}", Err(DetailError::Invisible { field })),
            // only a Hangul filler and a BOM
            ("\u{3164}\u{FEFF}", Err(DetailError::Invisible { field })),
            // a zero-width joiner inside visible text is kept (emoji, Indic scripts)
            ("a\u{200D}b", Ok(())),
            // blank is left to the caller (required or optional field)
            ("", Ok(())),
        ];
        for (value, want) in cases {
            assert_eq!(check_text(field, value, NAME_MAX_CHARS), want, "{value:?}");
        }
    }
}
