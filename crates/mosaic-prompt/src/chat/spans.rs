//! Where the responses are in a rendered conversation, for a loss on response tokens only.
//!
//! Worked out from the template itself, without tags in it: for each assistant message `i`,
//!
//! * `before` = render(messages[..i]) must be how the full rendering starts (the template is
//!   "prefix-stable");
//! * the generation prompt is what render(messages[..i], add_generation_prompt=true) adds to
//!   `before`; the part of it the full rendering repeats is prompt, so the response starts after
//!   it;
//! * the message's own rendering is what render(messages[..=i]) adds to `before`; where the full
//!   rendering repeats it, the response ends with it — so an end-of-turn or EOS token the
//!   template writes after the content belongs to the response. Some templates (Qwen3's) write a
//!   final assistant message differently from an earlier one (an empty `<think>` block); then
//!   the response is the longest tail of the message's own rendering that the full rendering
//!   has at the response start.
//!
//! Spans are byte offsets into the rendered text (on character boundaries), which map onto
//! token offsets from a tokenizer's offset mapping.

use std::ops::Range;

use super::ChatError;
use super::message::ChatMessage;
use super::template::ChatTemplate;

/// One assistant response within a rendered conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseSpan {
    /// Index of the assistant message in the conversation.
    pub message_index: usize,
    /// Byte offset of the first byte of the response in the rendered text.
    pub start: usize,
    /// Byte offset just past the response (end-of-turn token included).
    pub end: usize,
}

impl ResponseSpan {
    /// The span as a byte range.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }

    /// The span in characters (Unicode scalar values) of `text`, as Python indexes strings.
    pub fn char_range(&self, text: &str) -> Range<usize> {
        let to_chars = |byte: usize| text.get(..byte).map_or(0, |prefix| prefix.chars().count());
        to_chars(self.start)..to_chars(self.end)
    }
}

/// A conversation rendered for training: the text, and where the assistant responses are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedConversation {
    /// The rendered conversation (no generation prompt).
    pub text: String,
    /// The responses, one per assistant message, in order and not overlapping.
    pub responses: Vec<ResponseSpan>,
}

impl RenderedConversation {
    /// The text of each response.
    pub fn response_texts(&self) -> Vec<&str> {
        self.responses
            .iter()
            .map(|span| &self.text[span.range()])
            .collect()
    }

    /// For each byte of the text, whether it belongs to a response.
    pub fn response_byte_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.text.len()];
        for span in &self.responses {
            mask[span.range()].fill(true);
        }
        mask
    }
}

impl ChatTemplate {
    /// Renders a conversation for training (`add_generation_prompt=false`) and locates the
    /// response of every assistant message. A conversation without an assistant message is an
    /// error, as is a template whose rendering of a conversation does not start with its
    /// rendering of the conversation's beginning.
    pub fn render_for_training(
        &self,
        messages: &[ChatMessage],
    ) -> Result<RenderedConversation, ChatError> {
        let assistant_indices: Vec<usize> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_assistant())
            .map(|(i, _)| i)
            .collect();
        if assistant_indices.is_empty() {
            return Err(ChatError::NoAssistantTurn {
                roles: messages.iter().map(|m| m.role.clone()).collect(),
            });
        }
        let text = self.render(messages, false)?;
        let mut responses = Vec::with_capacity(assistant_indices.len());
        let mut previous_end = 0;
        for index in assistant_indices {
            let span = self.locate_response(messages, index, &text)?;
            if span.start < previous_end {
                return Err(self.span_error(index, "it overlaps the previous response"));
            }
            previous_end = span.end;
            responses.push(span);
        }
        Ok(RenderedConversation { text, responses })
    }

    fn locate_response(
        &self,
        messages: &[ChatMessage],
        index: usize,
        text: &str,
    ) -> Result<ResponseSpan, ChatError> {
        let render = |n: usize, add_generation_prompt: bool| {
            self.render_raw(&messages[..n], add_generation_prompt)
                .map_err(|e| self.render_error(&e, Some(index)))
        };
        let before = render(index, false)?;
        if !text.starts_with(&before) {
            return Err(self.span_error(
                index,
                "the template renders the messages before it differently once the conversation goes on",
            ));
        }
        let prompted = render(index, true)?;
        let generation_prompt = prompted.strip_prefix(&before).ok_or_else(|| {
            self.span_error(
                index,
                "add_generation_prompt changes the text before the prompt",
            )
        })?;
        let after_before = &text[before.len()..];
        let start = before.len() + common_prefix_len(generation_prompt, after_before);

        let through = render(index + 1, false)?;
        let own = through.strip_prefix(&before).ok_or_else(|| {
            self.span_error(
                index,
                "rendering it changes the text of the messages before it",
            )
        })?;
        let end = if after_before.starts_with(own) && before.len() + own.len() >= start {
            before.len() + own.len()
        } else {
            // The message renders differently in the middle of a conversation: keep the longest
            // tail of its own rendering that the full text has at the response start.
            let at_start = &text[start..];
            let longest = (0..own.len())
                .filter(|&cut| own.is_char_boundary(cut))
                .map(|cut| &own[cut..])
                .find(|tail| at_start.starts_with(tail))
                .map_or(0, str::len);
            start + longest
        };
        if end <= start && !messages[index].content.is_empty() {
            return Err(self.span_error(index, "its text is not in the rendered conversation"));
        }
        Ok(ResponseSpan {
            message_index: index,
            start,
            end,
        })
    }

    fn span_error(&self, index: usize, reason: &str) -> ChatError {
        ChatError::ResponseSpan {
            origin: self.origin().to_owned(),
            message_index: index,
            reason: reason.to_owned(),
        }
    }
}

/// Length in bytes of the longest common prefix of `a` and `b`, on a character boundary.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map_or_else(|| a.len().min(b.len()), |((i, _), _)| i)
}

#[cfg(test)]
mod tests {
    use super::common_prefix_len;

    #[test]
    fn common_prefix_stops_at_characters() {
        assert_eq!(common_prefix_len("abc", "abd"), 2);
        assert_eq!(common_prefix_len("ab", "abc"), 2);
        assert_eq!(common_prefix_len("é", "è"), 0);
        assert_eq!(common_prefix_len("", "x"), 0);
    }
}
