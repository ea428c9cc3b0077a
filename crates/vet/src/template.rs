//! Chat templates (Jinja): a static check for sandbox escapes, then a render in minijinja's
//! sandbox on a sample conversation with a fuel limit, so a template that loops forever or
//! expands without bound is a finding, not a hang.

use crate::{Finding, Verdict};

/// Attribute names that reach Python internals when a template runs in Python's Jinja.
const ESCAPES: &[&str] = &[
    "__class__",
    "__subclasses__",
    "__globals__",
    "__builtins__",
    "__import__",
    "__mro__",
    "__base__",
    "__bases__",
    "__init__",
    "__dict__",
    "__getattribute__",
    "__reduce__",
    "__reduce_ex__",
    "__code__",
    "__closure__",
    "__func__",
    "__self__",
    "__module__",
    "__loader__",
    "__spec__",
    "func_globals",
    "f_globals",
    "gi_frame",
    "tb_frame",
    "cr_frame",
    "mro",
];

/// Calls that only make sense to reach the host: os, subprocess, eval, file access.
const HOST_CALLS: &[&str] = &["popen", "system(", "subprocess", "eval(", "exec(", "open(", "import os", "cycler", "joiner", "lipsum", "self._TemplateReference"];

/// The most output a render may produce.
const MAX_OUTPUT: usize = 1024 * 1024;
/// Instructions a render may take.
const FUEL: u64 = 5_000_000;

/// Checks one template; `name` says which (e.g. `tokenizer.chat_template`).
pub fn check(name: &str, source: &str, bos: &str, eos: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let lowered = source.to_ascii_lowercase();
    for pattern in ESCAPES {
        if let Some(at) = lowered.find(pattern) {
            findings.push(Finding::new(Verdict::Unsafe, "template.sandbox_escape", Some(at as u64), format!("{name}: {pattern}"), format!("the template accesses {pattern}, a known way to escape the Jinja sandbox and run code")));
        }
    }
    // Names like `x|attr('__cla' ~ 'ss__')` assemble dunders at run time.
    if lowered.contains("|attr(") || lowered.contains("| attr(") {
        findings.push(Finding::new(Verdict::Unsafe, "template.dynamic_attribute", lowered.find("attr(").map(|a| a as u64), format!("{name}: attr()"), "the template looks up attributes by computed name, a way to hide sandbox escapes"));
    }
    for pattern in HOST_CALLS {
        if let Some(at) = lowered.find(pattern) {
            findings.push(Finding::new(Verdict::Suspicious, "template.host_access", Some(at as u64), format!("{name}: {pattern}"), format!("the template mentions {pattern:?}, which chat templates have no reason to use")));
        }
    }
    if let Err(reason) = render_sample(source, bos, eos) {
        findings.push(Finding::new(Verdict::Suspicious, "template.render_failed", None, name.to_owned(), format!("the template does not render on a sample conversation in the sandbox: {reason}")));
    }
    findings
}

/// Renders the template on a short conversation with tools, in the sandbox.
pub fn render_sample(source: &str, bos: &str, eos: &str) -> Result<String, String> {
    let messages = serde_json::json!([
        { "role": "system", "content": "You are a helpful assistant." },
        { "role": "user", "content": "What is the capital of France?" },
        { "role": "assistant", "content": "Paris." },
        { "role": "user", "content": "And of Italy?" },
    ]);
    render_chat(source, &messages, true, bos, eos, &sample_clock())
}

/// Formats the current time for templates' `strftime_now(format)` (Python strftime syntax).
pub type Clock = std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The vetting check's fixed clock, so a verdict never depends on the day it was computed.
fn sample_clock() -> Clock {
    std::sync::Arc::new(|_format: &str| "27 Nov 2026".to_owned())
}

/// Renders a chat template on `messages` (OpenAI-shaped JSON) in the sandbox, with the same fuel
/// and output limits as the vetting check. The runtime builds prompts with this.
pub fn render_chat(source: &str, messages: &serde_json::Value, add_generation_prompt: bool, bos: &str, eos: &str, clock: &Clock) -> Result<String, String> {
    render_chat_with_tools(source, messages, None, add_generation_prompt, bos, eos, clock)
}

/// [`render_chat`] with `tools` (OpenAI-shaped function definitions) for templates that render
/// them.
pub fn render_chat_with_tools(source: &str, messages: &serde_json::Value, tools: Option<&serde_json::Value>, add_generation_prompt: bool, bos: &str, eos: &str, clock: &Clock) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |message: String| -> Result<String, minijinja::Error> { Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message)) });
    let clock = clock.clone();
    env.add_function("strftime_now", move |format: String| clock(&format));
    env.add_template("chat", source).map_err(|err| format!("{err:#}"))?;
    let template = env.get_template("chat").map_err(|err| format!("{err:#}"))?;
    let context = minijinja::context! {
        messages => minijinja::Value::from_serialize(messages),
        add_generation_prompt => add_generation_prompt,
        bos_token => bos,
        eos_token => eos,
        tools => tools.map_or(minijinja::Value::from(()), minijinja::Value::from_serialize),
    };
    // Into a writer that refuses to grow past the limit, so a template that emits without end
    // stops there rather than after building the whole text.
    let mut output = Bounded { bytes: Vec::new(), limit: MAX_OUTPUT };
    if let Err(err) = template.render_captured_to(context, &mut output) {
        return Err(if output.bytes.len() >= MAX_OUTPUT || err.kind() == minijinja::ErrorKind::WriteFailure { format!("the output exceeds {MAX_OUTPUT} bytes") } else { format!("{err:#}") });
    }
    String::from_utf8(output.bytes).map_err(|_| "the output is not UTF-8".to_owned())
}

/// A buffer that fails a write that would take it past `limit` bytes.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.bytes.truncate(self.limit);
            return Err(std::io::Error::other("output limit reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(source: &str) -> Vec<&'static str> {
        check("t", source, "<s>", "</s>").iter().map(|f| f.code).collect()
    }

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'].strip() + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn ordinary_templates_render() {
        assert_eq!(codes(CHATML), Vec::<&str>::new());
        let out = render_sample(CHATML, "", "").unwrap();
        assert!(out.contains("<|im_start|>user\nWhat is the capital of France?<|im_end|>"));
        let llama = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}";
        assert_eq!(codes(llama), Vec::<&str>::new());
    }

    #[test]
    fn chats_render_with_and_without_a_generation_prompt() {
        let messages = serde_json::json!([{ "role": "user", "content": "hi" }]);
        assert_eq!(render_chat(CHATML, &messages, true, "", "", &sample_clock()).unwrap(), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(render_chat(CHATML, &messages, false, "", "", &sample_clock()).unwrap(), "<|im_start|>user\nhi<|im_end|>\n");
    }

    #[test]
    fn escapes_are_unsafe() {
        let ssti = "{{ ''.__class__.__mro__[1].__subclasses__() }}";
        assert!(codes(ssti).contains(&"template.sandbox_escape"));
        assert!(codes("{{ cycler.__init__.__globals__.os.popen('id').read() }}").contains(&"template.sandbox_escape"));
        assert!(codes("{{ x|attr('__cla' ~ 'ss__') }}").contains(&"template.dynamic_attribute"));
    }

    #[test]
    fn runaway_templates_are_stopped() {
        let forever = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        assert!(codes(forever).contains(&"template.render_failed"));
        assert!(codes("{% if %}").contains(&"template.render_failed"));
        assert!(codes("{{ raise_exception('no system role') }}").contains(&"template.render_failed"));
    }

    #[test]
    fn r11_a_template_that_writes_without_end_stops_at_the_limit() {
        // Each iteration writes 10 KiB: the writer refuses the 103rd, long before the fuel runs out.
        let flood = "{% for i in range(100000) %}{{ 'x' * 10240 }}{% endfor %}";
        let err = render_chat(flood, &serde_json::json!([]), true, "", "", &sample_clock()).unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
        assert!(render_chat(CHATML, &serde_json::json!([{ "role": "user", "content": "hi" }]), true, "", "", &sample_clock()).is_ok());
    }
}
