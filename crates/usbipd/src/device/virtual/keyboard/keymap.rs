//! Characters to HID keyboard usages (usage page 0x07) on a US layout.
//!
//! Pure lookup: it never guesses, so a character it does not know is `None`, not a near miss.

/// Left Shift in the modifier byte of a boot report.
pub const LEFT_SHIFT: u8 = 0x02;

const ENTER: u8 = 0x28;
const TAB: u8 = 0x2b;
const SPACE: u8 = 0x2c;

/// Punctuation keys: (unshifted, shifted, usage).
const PUNCTUATION: [(char, char, u8); 11] = [
    ('-', '_', 0x2d),
    ('=', '+', 0x2e),
    ('[', '{', 0x2f),
    (']', '}', 0x30),
    ('\\', '|', 0x31),
    (';', ':', 0x33),
    ('\'', '"', 0x34),
    ('`', '~', 0x35),
    (',', '<', 0x36),
    ('.', '>', 0x37),
    ('/', '?', 0x38),
];

/// Shifted digit row, in the order of the keys 1..9, 0.
const SHIFTED_DIGITS: [char; 10] = ['!', '@', '#', '$', '%', '^', '&', '*', '(', ')'];

/// The (modifiers, usage) pair that types `c`, if a US keyboard has a key for it.
pub fn key_for(c: char) -> Option<(u8, u8)> {
    // Usages: a..z are 0x04..0x1d; 1..9 are 0x1e..0x26 and 0 is 0x27.
    let digit_usage = |d: u8| if d == 0 { 0x27 } else { 0x1d + d };
    match c {
        'a'..='z' => Some((0, 0x04 + (c as u8 - b'a'))),
        'A'..='Z' => Some((LEFT_SHIFT, 0x04 + (c as u8 - b'A'))),
        '0'..='9' => Some((0, digit_usage(c as u8 - b'0'))),
        ' ' => Some((0, SPACE)),
        '\n' => Some((0, ENTER)),
        '\t' => Some((0, TAB)),
        _ => {
            if let Some(i) = SHIFTED_DIGITS.iter().position(|&s| s == c) {
                // SHIFTED_DIGITS[i] sits on key i+1, wrapping to 0 for ')'.
                return Some((LEFT_SHIFT, digit_usage(((i + 1) % 10) as u8)));
            }
            PUNCTUATION.iter().find_map(|&(plain, shifted, usage)| {
                if c == plain {
                    Some((0, usage))
                } else if c == shifted {
                    Some((LEFT_SHIFT, usage))
                } else {
                    None
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_digits_and_punctuation() {
        assert_eq!(key_for('a'), Some((0, 0x04)));
        assert_eq!(key_for('z'), Some((0, 0x1d)));
        assert_eq!(key_for('B'), Some((LEFT_SHIFT, 0x05)));
        assert_eq!(key_for('1'), Some((0, 0x1e)));
        assert_eq!(key_for('9'), Some((0, 0x26)));
        assert_eq!(key_for('0'), Some((0, 0x27)));
        assert_eq!(key_for('!'), Some((LEFT_SHIFT, 0x1e)));
        assert_eq!(key_for(')'), Some((LEFT_SHIFT, 0x27)));
        assert_eq!(key_for('\n'), Some((0, 0x28)));
        assert_eq!(key_for(' '), Some((0, 0x2c)));
        assert_eq!(key_for('?'), Some((LEFT_SHIFT, 0x38)));
        assert_eq!(key_for('\''), Some((0, 0x34)));
        assert_eq!(key_for('é'), None);
        assert_eq!(key_for('\r'), None);
    }

    #[test]
    fn every_printable_ascii_character_has_a_key_and_no_two_share_one() {
        let mut seen = std::collections::HashMap::new();
        for c in (0x20u8..0x7f).map(char::from) {
            let key = key_for(c).unwrap_or_else(|| panic!("no key for {c:?}"));
            assert!(key.1 >= 0x04 && key.1 <= 0x38, "{c:?} -> {key:?}");
            if let Some(other) = seen.insert(key, c) {
                panic!("{c:?} and {other:?} both map to {key:?}");
            }
        }
    }
}
