//! Chunking counted in the embedding model's own tokens: the text is cut into words (with the
//! space after each), each word counted by the model's tokenizer, and chunks gathered up to the
//! size with the overlap carried into the next. A word longer than a chunk is cut by characters.

/// Chunk sizes in tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunking {
    pub(crate) max_tokens: usize,
    pub(crate) overlap: usize,
}

/// The chunks of `text`, each at most `chunking.max_tokens` tokens by `count`.
pub(crate) fn chunks(text: &str, chunking: Chunking, count: impl Fn(&str) -> usize) -> Vec<String> {
    let max = chunking.max_tokens.max(1);
    let overlap = chunking.overlap.min(max / 2);
    // Words with their costs; a word over the size is split into pieces that fit.
    let mut words: Vec<(&str, usize)> = Vec::new();
    for word in text.split_inclusive(char::is_whitespace) {
        let cost = count(word.trim());
        if cost <= max {
            words.push((word, cost));
            continue;
        }
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            // Halve until the piece fits (at least one character).
            while end > start && count(&word[start..end]) > max {
                let mut half = start + (end - start) / 2;
                while !word.is_char_boundary(half) {
                    half -= 1;
                }
                if half == start {
                    end = start + word[start..].chars().next().map_or(1, char::len_utf8);
                    break;
                }
                end = half;
            }
            words.push((&word[start..end], count(&word[start..end]).min(max)));
            start = end;
        }
    }
    let mut out = Vec::new();
    let mut first = 0;
    while first < words.len() {
        let mut total = 0;
        let mut last = first;
        while last < words.len() && total + words[last].1 <= max {
            total += words[last].1;
            last += 1;
        }
        last = last.max(first + 1);
        let chunk: String = words[first..last].iter().map(|(w, _)| *w).collect();
        if !chunk.trim().is_empty() {
            out.push(chunk.trim().to_owned());
        }
        if last >= words.len() {
            break;
        }
        // Step back over words worth `overlap` tokens, always moving forward.
        let mut back = 0;
        let mut next = last;
        while next > first + 1 && back + words[next - 1].1 <= overlap {
            back += words[next - 1].1;
            next -= 1;
        }
        first = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One token per word, as a whitespace tokenizer counts.
    fn words(text: &str) -> usize {
        text.split_whitespace().count().max(usize::from(!text.is_empty()))
    }

    #[test]
    fn chunks_fit_and_overlap() {
        let text: String = (0..100).map(|i| format!("w{i} ")).collect();
        let chunks = chunks(&text, Chunking { max_tokens: 10, overlap: 4 }, words);
        assert!(chunks.iter().all(|c| words(c) <= 10));
        assert!(chunks[0].starts_with("w0 ") && chunks[1].starts_with("w6 "), "{chunks:?}");
        assert!(chunks.last().unwrap().ends_with("w99"));
    }

    #[test]
    fn a_long_word_is_cut_to_fit() {
        let long = "x".repeat(1000);
        let chunks = chunks(&long, Chunking { max_tokens: 10, overlap: 0 }, |t| t.len().div_ceil(50));
        assert!(chunks.iter().all(|c| c.len() <= 500), "{:?}", chunks.iter().map(String::len).collect::<Vec<_>>());
        assert_eq!(chunks.concat(), long);
    }
}
