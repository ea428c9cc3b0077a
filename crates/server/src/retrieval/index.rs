//! A vector store's search index, built in memory from its chunks: BM25 over the chunk text
//! (lowercased words, English stopwords dropped, Snowball-stemmed) and exact cosine similarity
//! over the vectors, fused by weighted reciprocal rank fusion. Filters on file attributes are
//! applied before ranking, so a filter never leaves fewer results than exist. Scores are in
//! [0, 1]: the fused score over the best possible one; text alone, BM25 over the best BM25;
//! vectors alone, the cosine (negative ones as 0).
//!
//! Exact search rather than an approximate graph: for the store sizes this serves (tens of
//! thousands of chunks) a scan of normalized vectors is a few milliseconds and has recall 1.

use std::collections::HashMap;

use domain::vectors::IndexedChunk;
use serde_json::Value;

/// Reciprocal rank fusion's constant (as Elasticsearch, Azure and OpenSearch use it).
const RRF_K: f32 = 60.0;
/// How deep each ranking goes into the fusion.
const FUSION_DEPTH: usize = 200;
const BM25_K1: f32 = 1.2;
const BM25_B: f32 = 0.75;
/// The deepest a filter may nest, and the most conditions it may hold.
const MAX_FILTER_DEPTH: usize = 8;
const MAX_FILTER_NODES: usize = 200;

const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// The terms BM25 counts in a text.
pub(crate) fn terms(text: &str, stemmer: &rust_stemmers::Stemmer) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).filter(|w| !STOPWORDS.contains(&w.as_str())).map(|w| stemmer.stem(&w).into_owned()).collect()
}

/// A condition on file attributes (OpenAI's comparison and compound filters).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Filter {
    Compare { op: Op, key: String, value: Value },
    All(Vec<Filter>),
    Any(Vec<Filter>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Nin,
}

impl Filter {
    /// Parses a filter, naming what is wrong with it.
    pub(crate) fn parse(value: &Value) -> Result<Filter, String> {
        let mut nodes = 0;
        Self::parse_at(value, 0, &mut nodes)
    }

    fn parse_at(value: &Value, depth: usize, nodes: &mut usize) -> Result<Filter, String> {
        *nodes += 1;
        if depth > MAX_FILTER_DEPTH || *nodes > MAX_FILTER_NODES {
            return Err(format!("filters may nest {MAX_FILTER_DEPTH} deep and hold {MAX_FILTER_NODES} conditions"));
        }
        let kind = value.get("type").and_then(Value::as_str).ok_or("a filter needs a type")?;
        let op = match kind {
            "and" | "or" => {
                let list = value.get("filters").and_then(Value::as_array).ok_or("a compound filter needs filters")?;
                let parsed = list.iter().map(|f| Self::parse_at(f, depth + 1, nodes)).collect::<Result<Vec<_>, _>>()?;
                return Ok(if kind == "and" { Filter::All(parsed) } else { Filter::Any(parsed) });
            }
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "in" => Op::In,
            "nin" => Op::Nin,
            other => return Err(format!("filter type {other:?} is not one of eq, ne, gt, gte, lt, lte, in, nin, and, or")),
        };
        let key = value.get("key").and_then(Value::as_str).ok_or("a comparison filter needs a key")?.to_owned();
        let operand = value.get("value").cloned().ok_or("a comparison filter needs a value")?;
        let scalar = |v: &Value| v.is_string() || v.is_number() || v.is_boolean();
        let fits = match op {
            Op::In | Op::Nin => operand.as_array().is_some_and(|list| list.iter().all(scalar)),
            _ => scalar(&operand),
        };
        if !fits {
            return Err(format!("the value of filter {key:?} must be a string, number or boolean (a list of them for in and nin)"));
        }
        Ok(Filter::Compare { op, key, value: operand })
    }

    /// Whether attributes pass.
    pub(crate) fn matches(&self, attributes: &Value) -> bool {
        match self {
            Filter::All(list) => list.iter().all(|f| f.matches(attributes)),
            Filter::Any(list) => list.iter().any(|f| f.matches(attributes)),
            Filter::Compare { op, key, value } => {
                let Some(found) = attributes.get(key) else { return matches!(op, Op::Ne | Op::Nin) };
                match op {
                    Op::Eq => same(found, value),
                    Op::Ne => !same(found, value),
                    Op::In => value.as_array().is_some_and(|list| list.iter().any(|v| same(found, v))),
                    Op::Nin => value.as_array().is_none_or(|list| !list.iter().any(|v| same(found, v))),
                    Op::Gt | Op::Gte | Op::Lt | Op::Lte => match order(found, value) {
                        Some(ordering) => match op {
                            Op::Gt => ordering.is_gt(),
                            Op::Gte => ordering.is_ge(),
                            Op::Lt => ordering.is_lt(),
                            _ => ordering.is_le(),
                        },
                        None => false,
                    },
                }
            }
        }
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// How a search ranks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Weights {
    pub(crate) embedding: f32,
    pub(crate) text: f32,
}

/// One result: a chunk (its place in the index) and its score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Hit {
    pub(crate) chunk: usize,
    pub(crate) score: f32,
}

/// A store's index at one version.
pub(crate) struct Index {
    pub(crate) version: i64,
    pub(crate) chunks: Vec<IndexedChunk>,
    /// Unit-length vectors, row by row.
    vectors: Vec<f32>,
    dims: usize,
    postings: HashMap<String, Vec<(u32, u32)>>,
    lengths: Vec<u32>,
    average_length: f32,
}

impl Index {
    /// Builds the index (CPU work: callers run it on the blocking pool).
    pub(crate) fn build(version: i64, chunks: Vec<IndexedChunk>) -> Index {
        let stemmer = rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English);
        let dims = chunks.first().map_or(0, |c| c.chunk.vector.len());
        let mut vectors = Vec::with_capacity(chunks.len() * dims);
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut lengths = Vec::with_capacity(chunks.len());
        for (i, indexed) in chunks.iter().enumerate() {
            let vector = &indexed.chunk.vector;
            let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
            if vector.len() == dims {
                vectors.extend(vector.iter().map(|v| v / norm));
            } else {
                vectors.extend(std::iter::repeat_n(0.0, dims));
            }
            let words = terms(&indexed.chunk.text, &stemmer);
            lengths.push(words.len() as u32);
            let mut counts: HashMap<String, u32> = HashMap::new();
            for word in words {
                *counts.entry(word).or_default() += 1;
            }
            for (word, count) in counts {
                postings.entry(word).or_default().push((i as u32, count));
            }
        }
        let average_length = if lengths.is_empty() { 1.0 } else { lengths.iter().sum::<u32>() as f32 / lengths.len() as f32 };
        Index { version, chunks, vectors, dims, postings, lengths, average_length: average_length.max(1.0) }
    }

    /// The best `max` chunks for the query among those `filter` lets through, best first.
    #[cfg(test)]
    pub(crate) fn search(&self, text: &str, vector: Option<&[f32]>, filter: Option<&Filter>, weights: Weights, max: usize) -> Vec<Hit> {
        let allowed = self.allowed(filter);
        let by_text = if weights.text > 0.0 { self.text_ranking(text, &allowed, max) } else { Vec::new() };
        self.fuse(by_text, vector, &allowed, weights, max)
    }

    /// Which chunks `filter` lets through, by position.
    pub(crate) fn allowed(&self, filter: Option<&Filter>) -> Vec<bool> {
        self.chunks.iter().map(|c| filter.is_none_or(|f| f.matches(&c.attributes))).collect()
    }

    /// Allowed chunks by BM25 for `text`, best first, as deep as a fusion of results up to `max`
    /// reads (it needs no query vector, so it can run while the query is embedded).
    pub(crate) fn text_ranking(&self, text: &str, allowed: &[bool], max: usize) -> Vec<(usize, f32)> {
        self.bm25(text, allowed, FUSION_DEPTH.max(max))
    }

    /// The best `max` allowed chunks: the text ranking (from `text_ranking`) fused with the
    /// ranking by `vector` as `weights` say, or either alone.
    pub(crate) fn fuse(&self, by_text: Vec<(usize, f32)>, vector: Option<&[f32]>, allowed: &[bool], weights: Weights, max: usize) -> Vec<Hit> {
        // Fusion reads each ranking FUSION_DEPTH deep; a single ranking only `max` deep.
        let depth = if weights.text > 0.0 && weights.embedding > 0.0 { FUSION_DEPTH.max(max) } else { max };
        let by_vector = match vector.filter(|v| weights.embedding > 0.0 && v.len() == self.dims) {
            Some(query) => self.cosine(query, allowed, depth),
            None => Vec::new(),
        };
        let mut hits: Vec<Hit> = if weights.text > 0.0 && weights.embedding > 0.0 {
            let mut fused: HashMap<usize, f32> = HashMap::new();
            for (rank, (chunk, _)) in by_vector.iter().take(FUSION_DEPTH).enumerate() {
                *fused.entry(*chunk).or_default() += weights.embedding / (RRF_K + rank as f32 + 1.0);
            }
            for (rank, (chunk, _)) in by_text.iter().take(FUSION_DEPTH).enumerate() {
                *fused.entry(*chunk).or_default() += weights.text / (RRF_K + rank as f32 + 1.0);
            }
            let best = (weights.embedding + weights.text) / (RRF_K + 1.0);
            fused.into_iter().map(|(chunk, score)| Hit { chunk, score: (score / best).clamp(0.0, 1.0) }).collect()
        } else if weights.text > 0.0 {
            let best = by_text.first().map_or(1.0, |(_, s)| *s).max(f32::MIN_POSITIVE);
            by_text.iter().map(|(chunk, score)| Hit { chunk: *chunk, score: (score / best).clamp(0.0, 1.0) }).collect()
        } else {
            by_vector.iter().map(|(chunk, score)| Hit { chunk: *chunk, score: score.clamp(0.0, 1.0) }).collect()
        };
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.chunk.cmp(&b.chunk)));
        hits.truncate(max);
        hits
    }

    /// Chunks by BM25, best first (only those with a matching term).
    fn bm25(&self, text: &str, allowed: &[bool], depth: usize) -> Vec<(usize, f32)> {
        let stemmer = rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English);
        let n = self.chunks.len() as f32;
        // Scores by chunk, dense: a query's common terms touch a good part of the collection.
        let mut scores = vec![0f32; self.chunks.len()];
        let mut query = terms(text, &stemmer);
        query.sort();
        query.dedup();
        for term in query {
            let Some(list) = self.postings.get(&term) else { continue };
            let df = list.len() as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(chunk, tf) in list {
                if !allowed[chunk as usize] {
                    continue;
                }
                let tf = tf as f32;
                let length = self.lengths[chunk as usize] as f32;
                let score = idf * tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * (1.0 - BM25_B + BM25_B * length / self.average_length));
                // A matching term scores above 0 (its idf is above 0), so 0 means unmatched.
                scores[chunk as usize] += score.max(f32::MIN_POSITIVE);
            }
        }
        best_first(scores.into_iter().enumerate().filter(|(_, s)| *s > 0.0).collect(), depth)
    }

    /// Chunks by cosine similarity, best first.
    fn cosine(&self, query: &[f32], allowed: &[bool], depth: usize) -> Vec<(usize, f32)> {
        let norm = query.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
        let ranked: Vec<(usize, f32)> = engine::dot_rows(&self.vectors, query).into_iter().enumerate().filter(|(i, _)| allowed[*i]).map(|(i, dot)| (i, dot / norm)).collect();
        best_first(ranked, depth)
    }
}

/// The best `depth` entries, best first (ties by position), without sorting the rest.
fn best_first(mut ranked: Vec<(usize, f32)>, depth: usize) -> Vec<(usize, f32)> {
    let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if ranked.len() > depth && depth > 0 {
        ranked.select_nth_unstable_by(depth - 1, order);
        ranked.truncate(depth);
    }
    ranked.sort_by(order);
    ranked
}

#[cfg(test)]
mod tests {
    use domain::vectors::Chunk;
    use serde_json::json;

    use super::*;

    fn chunk(i: u32, text: &str, vector: Vec<f32>, attributes: Value) -> IndexedChunk {
        IndexedChunk { chunk: Chunk { file_id: format!("file-{i}"), index: 0, text: text.into(), vector }, filename: format!("{i}.txt"), attributes }
    }

    fn index() -> Index {
        Index::build(
            1,
            vec![
                chunk(0, "Cats are small domesticated carnivorous mammals.", vec![1.0, 0.0, 0.0], json!({ "kind": "animal", "year": 2020 })),
                chunk(1, "The stock market fell sharply on Monday.", vec![0.0, 1.0, 0.0], json!({ "kind": "finance", "year": 2023 })),
                chunk(2, "Dogs and cats are popular pets.", vec![0.7, 0.0, 0.7], json!({ "kind": "animal", "year": 2024 })),
            ],
        )
    }

    #[test]
    fn hybrid_ranks_what_both_agree_on_first_and_scores_stay_in_range() {
        let index = index();
        let hits = index.search("domesticated cats", Some(&[1.0, 0.0, 0.1]), None, Weights { embedding: 1.0, text: 1.0 }, 10);
        assert_eq!(hits[0].chunk, 0);
        assert!((hits[0].score - 1.0).abs() < 1e-6, "{hits:?}");
        assert!(hits.iter().all(|h| (0.0..=1.0).contains(&h.score)));
        let text_only = index.search("stock market", None, None, Weights { embedding: 0.0, text: 1.0 }, 10);
        assert_eq!(text_only.len(), 1);
        assert_eq!(text_only[0].chunk, 1);
    }

    #[test]
    fn filters_apply_before_the_cut() {
        let index = index();
        let filter = Filter::parse(&json!({ "type": "and", "filters": [{ "type": "eq", "key": "kind", "value": "animal" }, { "type": "gte", "key": "year", "value": 2021 }] })).unwrap();
        let hits = index.search("cats", Some(&[1.0, 0.0, 0.0]), Some(&filter), Weights { embedding: 1.0, text: 1.0 }, 1);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].chunk, 2, "the best match is filtered out, the next one is still found");
        let none = Filter::parse(&json!({ "type": "in", "key": "kind", "value": ["sports"] })).unwrap();
        assert!(index.search("cats", None, Some(&none), Weights { embedding: 0.0, text: 1.0 }, 10).is_empty());
        assert!(Filter::parse(&json!({ "type": "like", "key": "k", "value": 1 })).is_err());
        let deep = (0..20).fold(json!({ "type": "eq", "key": "k", "value": 1 }), |inner, _| json!({ "type": "and", "filters": [inner] }));
        assert!(Filter::parse(&deep).is_err());
    }

    #[test]
    fn the_laned_dot_product_and_partial_ranking_agree_with_plain_ones() {
        let a: Vec<f32> = (0..387).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..387).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((engine::dot_rows(&a, &b)[0] - plain).abs() < 1e-3);
        let ranked: Vec<(usize, f32)> = (0..100).map(|i| (i, ((i * 37) % 101) as f32)).collect();
        let mut sorted = ranked.clone();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(best_first(ranked, 7), sorted[..7].to_vec());
    }

    #[test]
    fn stemming_matches_word_forms() {
        let stemmer = rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English);
        assert_eq!(terms("The running dogs", &stemmer), vec!["run", "dog"]);
    }
}
