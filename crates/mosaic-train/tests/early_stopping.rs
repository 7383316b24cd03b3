//! Early stopping: patience, min_delta, modes, resume.

use mosaic_train::early_stopping::{Decision, EarlyStopping, Mode};

#[test]
fn max_mode_with_patience() {
    let mut es = EarlyStopping::new("f1_macro", Mode::Max, 2, 0.0);
    assert_eq!(es.update(0.5), Decision::Improved);
    assert_eq!(es.update(0.6), Decision::Improved);
    assert_eq!(es.update(0.6), Decision::NoImprovement);
    assert_eq!(es.update(0.7), Decision::Improved);
    assert_eq!(es.update(0.65), Decision::NoImprovement);
    assert_eq!(es.update(0.1), Decision::Stop);
    assert!(es.should_stop());
    assert_eq!(es.best(), Some(0.7));
    assert_eq!(es.best_eval, Some(3));
}

#[test]
fn min_mode_and_min_delta() {
    let mut es = EarlyStopping::new("loss", Mode::Min, 1, 0.01);
    assert_eq!(es.update(1.0), Decision::Improved);
    assert_eq!(es.update(0.9), Decision::Improved);
    // Better, but not by more than min_delta.
    assert_eq!(es.update(0.895), Decision::Stop);
    assert_eq!(es.best(), Some(0.9));
    assert_eq!(Mode::for_metric("eval_loss"), Mode::Min);
    assert_eq!(Mode::for_metric("accuracy"), Mode::Max);
}

#[test]
fn nan_never_improves_and_zero_patience_never_stops() {
    let mut es = EarlyStopping::new("f1", Mode::Max, 0, 0.0);
    assert_eq!(es.update(f64::NAN), Decision::NoImprovement);
    assert_eq!(es.best(), None);
    assert_eq!(es.update(0.3), Decision::Improved);
    for _ in 0..10 {
        assert_eq!(es.update(0.1), Decision::NoImprovement);
    }
    assert!(!es.should_stop());
}

#[test]
fn state_round_trips_through_json() {
    let mut es = EarlyStopping::new("f1_micro", Mode::Max, 3, 0.001);
    es.update(0.4);
    es.update(0.3);
    let json = serde_json::to_string(&es).unwrap();
    let mut resumed: EarlyStopping = serde_json::from_str(&json).unwrap();
    assert_eq!(resumed, es);
    assert_eq!(resumed.update(0.35), Decision::NoImprovement);
    assert_eq!(resumed.update(0.2), Decision::Stop);
    assert!(json.contains("\"mode\":\"max\""), "{json}");
}
