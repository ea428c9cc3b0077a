//! Grading: `{{item.x}}` / `{{sample.output_text}}` templates, the string and text-similarity
//! graders (pure), and the statistics a run reports (pass rates with Wilson 95% intervals, mean
//! scores with normal 95% intervals).

use serde_json::Value;

use super::spec::{Metric, Operation};

/// The most characters a similarity metric compares from each side (bounds its work).
const MAX_COMPARED_CHARS: usize = 8192;

/// Renders `{{ item.a.b }}` and `{{ sample.x }}` references in `template`: strings as they
/// are, other values as compact JSON. A reference the data lacks is an error naming it.
pub(crate) fn render(template: &str, item: &Value, sample: &Value) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("an unclosed {{{{ in {template:?}"))?;
        let reference = after[..end].trim();
        let (root, path) = match reference.split_once('.') {
            Some((root, path)) => (root, Some(path)),
            None => (reference, None),
        };
        let base = match root {
            "item" => item,
            "sample" => sample,
            other => return Err(format!("{{{{{reference}}}}} names {other:?}; templates may name item.* and sample.*")),
        };
        let value = match path {
            None => Some(base),
            Some(path) => path.split('.').try_fold(base, |value, key| match value {
                Value::Array(list) => key.parse::<usize>().ok().and_then(|i| list.get(i)),
                other => other.get(key),
            }),
        };
        match value {
            Some(Value::String(text)) => out.push_str(text),
            Some(Value::Null) | None => return Err(format!("{{{{{reference}}}}} is not in the data")),
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A string check.
pub(crate) fn string_check(input: &str, reference: &str, operation: Operation) -> bool {
    match operation {
        Operation::Eq => input == reference,
        Operation::Ne => input != reference,
        Operation::Like => input.contains(reference),
        Operation::Ilike => input.to_lowercase().contains(&reference.to_lowercase()),
    }
}

/// A similarity in [0, 1].
pub(crate) fn similarity(input: &str, reference: &str, metric: Metric) -> f64 {
    match metric {
        Metric::FuzzyMatch => {
            let a: Vec<char> = input.chars().take(MAX_COMPARED_CHARS).collect();
            let b: Vec<char> = reference.chars().take(MAX_COMPARED_CHARS).collect();
            if a.is_empty() && b.is_empty() {
                return 1.0;
            }
            // Indel similarity (rapidfuzz's `ratio`): 2 * LCS / (|a| + |b|).
            2.0 * lcs(&a, &b) as f64 / (a.len() + b.len()) as f64
        }
        Metric::Bleu => bleu(&bleu_tokens(input), &bleu_tokens(reference)),
        Metric::Rouge(n) => rouge_n(&rouge_tokens(input), &rouge_tokens(reference), n),
        Metric::RougeL => {
            let (a, b) = (rouge_tokens(input), rouge_tokens(reference));
            f1(lcs(&a, &b) as f64, a.len() as f64, b.len() as f64)
        }
    }
}

/// The length of the longest common subsequence.
fn lcs<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y { diagonal + 1 } else { above.max(row[j]) };
            diagonal = above;
        }
    }
    row[b.len()]
}

fn f1(overlap: f64, predicted: f64, expected: f64) -> f64 {
    if overlap == 0.0 || predicted == 0.0 || expected == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (overlap / predicted, overlap / expected);
    2.0 * precision * recall / (precision + recall)
}

/// rouge-score's tokens: lowercase, runs of ASCII letters and digits.
fn rouge_tokens(text: &str) -> Vec<String> {
    text.chars().take(MAX_COMPARED_CHARS).collect::<String>().to_lowercase().split(|c: char| !c.is_ascii_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

fn ngrams(tokens: &[String], n: usize) -> std::collections::HashMap<&[String], usize> {
    let mut counts = std::collections::HashMap::new();
    for gram in tokens.windows(n) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

/// ROUGE-N F1.
fn rouge_n(predicted: &[String], expected: &[String], n: usize) -> f64 {
    let (p, e) = (ngrams(predicted, n), ngrams(expected, n));
    let overlap: usize = p.iter().map(|(gram, count)| (*count).min(e.get(gram).copied().unwrap_or(0))).sum();
    f1(overlap as f64, p.values().sum::<usize>() as f64, e.values().sum::<usize>() as f64)
}

/// BLEU's tokens: words, with punctuation split off (close to sacrebleu's `13a`).
fn bleu_tokens(text: &str) -> Vec<String> {
    let mut spaced = String::with_capacity(text.len());
    for c in text.chars().take(MAX_COMPARED_CHARS) {
        if c.is_ascii_punctuation() {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    spaced.split_whitespace().map(str::to_owned).collect()
}

/// Sentence BLEU-4 as sacrebleu's `sentence_bleu` computes it: uniform weights over the orders
/// the hypothesis has, exponential smoothing of orders without a match, brevity penalty; in [0, 1].
fn bleu(hypothesis: &[String], reference: &[String]) -> f64 {
    if hypothesis.is_empty() || reference.is_empty() {
        return 0.0;
    }
    let mut log_sum = 0.0;
    let mut orders = 0;
    let mut smooth = 1.0;
    for n in 1..=4 {
        let (h, r) = (ngrams(hypothesis, n), ngrams(reference, n));
        let total: usize = h.values().sum();
        if total == 0 {
            break;
        }
        let correct: usize = h.iter().map(|(gram, count)| (*count).min(r.get(gram).copied().unwrap_or(0))).sum();
        let precision = if correct == 0 {
            smooth *= 2.0;
            1.0 / (smooth * total as f64)
        } else {
            correct as f64 / total as f64
        };
        log_sum += precision.ln();
        orders += 1;
    }
    let penalty = if hypothesis.len() < reference.len() { (1.0 - reference.len() as f64 / hypothesis.len() as f64).exp() } else { 1.0 };
    penalty * (log_sum / f64::from(orders)).exp()
}

/// A Wilson score interval (95%) for `passed` of `n`.
pub(crate) fn wilson(passed: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (z, n, p) = (1.96f64, n as f64, passed as f64 / n as f64);
    let center = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// The mean of `scores` and its normal 95% interval.
pub(crate) fn mean_interval(scores: &[f64]) -> Option<(f64, f64, f64)> {
    if scores.is_empty() {
        return None;
    }
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    if scores.len() == 1 {
        return Some((mean, mean, mean));
    }
    let variance = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let half = 1.96 * (variance / n).sqrt();
    Some((mean, mean - half, mean + half))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_name_item_and_sample_fields() {
        let item = json!({ "q": "2+2?", "meta": { "n": 4 }, "tags": ["a", "b"] });
        let sample = json!({ "output_text": "4" });
        assert_eq!(render("Q: {{item.q}} ({{ item.meta.n }}, {{item.tags.1}}) A: {{sample.output_text}}", &item, &sample).unwrap(), "Q: 2+2? (4, b) A: 4");
        assert_eq!(render("{{item.meta}}", &item, &sample).unwrap(), r#"{"n":4}"#);
        assert!(render("{{item.missing}}", &item, &sample).unwrap_err().contains("item.missing"));
        assert!(render("{{ env.HOME }}", &item, &sample).is_err());
        assert!(render("{{item.q", &item, &sample).is_err());
    }

    #[test]
    fn string_checks_compare_as_openai_describes() {
        assert!(string_check("Paris", "Paris", Operation::Eq));
        assert!(string_check("Paris", "paris", Operation::Ne));
        assert!(string_check("It is Paris.", "Paris", Operation::Like));
        assert!(!string_check("It is paris.", "Paris", Operation::Like));
        assert!(string_check("It is PARIS.", "paris", Operation::Ilike));
    }

    #[test]
    fn similarity_metrics_match_hand_computed_values() {
        assert_eq!(similarity("kitten", "kitten", Metric::FuzzyMatch), 1.0);
        // LCS of "kitten" and "sitting" is "ittn" (4): 8 / 13.
        assert!((similarity("kitten", "sitting", Metric::FuzzyMatch) - 8.0 / 13.0).abs() < 1e-12);
        assert_eq!(similarity("the cat sat", "the cat sat", Metric::Bleu), 1.0);
        assert_eq!(similarity("", "the cat", Metric::Bleu), 0.0);
        // Unigrams: 2 of 3 predicted are expected (precision 2/3), 2 of 4 expected (recall 1/2): F1 4/7.
        assert!((similarity("The cat ran", "the cat sat down", Metric::Rouge(1)) - 4.0 / 7.0).abs() < 1e-12);
        // Bigrams: "the cat" only: precision 1/2, recall 1/3, F1 2/5.
        assert!((similarity("The cat ran", "the cat sat down", Metric::Rouge(2)) - 0.4).abs() < 1e-12);
        assert!((similarity("the cat ran", "the cat sat down", Metric::RougeL) - 4.0 / 7.0).abs() < 1e-12);
        // BLEU of a hypothesis sharing 3 of 4 unigrams, 1 of 3 bigrams, no trigram: smoothed, below 1.
        let b = similarity("the cat sat here", "the cat is here", Metric::Bleu);
        assert!(b > 0.0 && b < 0.6, "{b}");
    }

    #[test]
    fn intervals_cover_the_estimate() {
        let (lo, hi) = wilson(8, 10);
        assert!(lo < 0.8 && 0.8 < hi && lo > 0.4 && hi < 1.0);
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (mean, lo, hi) = mean_interval(&[1.0, 0.0, 1.0, 1.0]).unwrap();
        assert!((mean - 0.75).abs() < 1e-12 && lo < mean && mean < hi);
    }
}
