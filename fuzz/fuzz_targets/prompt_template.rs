//! The prompt template parser and renderer: `Template::parse`, `render`, `render_filled`, `check_slots`.
//!
//! Input: the template, then NUL-separated slot values (given to the template's slots in order).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mosaic_prompt::Template;

fuzz_target!(|data: &[u8]| {
    let text = mosaic_fuzz::text(data);
    let (source, values) = mosaic_fuzz::pieces(&text);
    let Ok(template) = Template::parse(source) else {
        return;
    };

    // Its own source parses to the same template (recipes and checkpoints store templates as text).
    match Template::parse(template.source()) {
        Ok(again) => assert_eq!(
            again, template,
            "a template changes when its source is parsed again"
        ),
        Err(err) => panic!("a template's own source does not parse: {err}"),
    }

    // Every slot given a value: rendering must succeed.
    let slots: Vec<String> = template.slots().into_iter().map(str::to_owned).collect();
    let pairs: Vec<(String, String)> = slots
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            (
                slot.clone(),
                values.get(i).copied().unwrap_or("x").to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = slots.iter().map(String::as_str).collect();
    if let Err(err) = template.check_slots(&names) {
        panic!("check_slots rejects the template's own slots: {err}");
    }
    let mask = values.last().copied().unwrap_or("[MASK]");
    let masked = template.clone().with_mask_token(mask);
    if let Err(err) = masked.render(&pairs) {
        panic!("render fails with every slot given: {err}");
    }
    if let Err(err) = template.render_filled(&pairs, mask) {
        panic!("render_filled fails with every slot given: {err}");
    }

    // Missing values are an error, never a panic.
    let _ = template.render(&Vec::<(String, String)>::new());
    let _ = template.check_slots(&values);
});
