use std::time::Duration;

use super::*;
use serde_json::{json, Value};

fn client_task(client: &'static [u8], msg_id: &str, metadata: Value) -> Task {
    let frames = vec![
        Bytes::from_static(client),
        Bytes::from_static(TASK_ROUTE),
        Bytes::from_static(b"<IDS|MSG>"),
        Bytes::from_static(b"sig"),
        Bytes::from(json!({"msg_id": msg_id, "msg_type": "apply_request"}).to_string()),
        Bytes::from_static(b"{}"),
        Bytes::from(metadata.to_string()),
        Bytes::from_static(b"{}"),
    ];
    Task::new(frames, 2).unwrap().unwrap()
}

fn with_hwm(hwm: usize) -> Scheduler {
    Scheduler::new(SchedulerSpec {
        scheme: Scheme::LeastLoad,
        hwm,
        ..Default::default()
    })
}

fn task(msg_id: &str, metadata: Value) -> Task {
    client_task(b"client", msg_id, metadata)
}

/// A moment by which every running task counts as long.
fn later() -> Instant {
    Instant::now() + RECLAIM_AFTER * 2
}

fn ids(given: &[(u32, Task)]) -> Vec<(u32, &str)> {
    given.iter().map(|(e, t)| (*e, t.msg_id.as_str())).collect()
}

/// An engine's reply to `msg_id`.
fn answer(msg_id: &str, ok: bool, dependencies_met: bool) -> ReplyInfo {
    ReplyInfo {
        msg_id: msg_id.into(),
        ok,
        dependencies_met,
        aborted: false,
    }
}

fn failures(s: &mut Scheduler) -> Vec<(String, Why)> {
    s.take_failed()
        .into_iter()
        .map(|f| (f.task.msg_id, f.why))
        .collect()
}

/// Runs `msg_id` on `engine` to the end with status `ok`.
fn done(s: &mut Scheduler, engine: u32, msg_id: &str, ok: bool) {
    assert_eq!(
        s.reply(engine, &answer(msg_id, ok, true), &[engine]),
        Reply::Forward
    );
}

#[test]
fn tasks_go_to_free_engines_then_one_more_each_is_prefetched() {
    let mut s = Scheduler::default();
    for id in ["a", "b", "c", "d", "e"] {
        s.submit(task(id, json!({})));
    }
    let given = s.assign(&[0, 1]);
    assert_eq!(ids(&given), [(0, "a"), (1, "b"), (0, "c"), (1, "d")]);
    assert_eq!(s.queued(), 1);
    assert!(
        s.assign(&[0, 1]).is_empty(),
        "hwm 1 and one prefetched each: full"
    );
    assert_eq!(
        s.reply(1, &answer("b", true, true), &[0, 1]),
        Reply::Forward
    );
    assert_eq!(
        s.reply(1, &answer("b", true, true), &[0, 1]),
        Reply::NotATask
    );
    assert_eq!(
        s.reply(0, &answer("zzz", true, true), &[0, 1]),
        Reply::NotATask
    );
    // d now runs on 1, e is prefetched behind it.
    assert_eq!(ids(&s.assign(&[0, 1])), [(1, "e")]);
    assert!(s.reclaim(&[0, 1], later()).is_empty(), "nobody is idle");
    // A new engine takes a prefetched task back at once.
    assert!(s.assign(&[0, 1, 2]).is_empty());
    assert!(
        s.reclaim(&[0, 1, 2], Instant::now()).is_empty(),
        "not behind a task that just started"
    );
    let taken = s.reclaim(&[0, 1, 2], later());
    assert_eq!(taken.len(), 1);
    let (holder, msg_id) = taken[0].clone();
    assert!(s.reclaim(&[0, 1, 2], later()).is_empty(), "asked once");
    let aborted = ReplyInfo {
        msg_id: msg_id.clone(),
        ok: false,
        dependencies_met: true,
        aborted: true,
    };
    assert_eq!(s.reply(holder, &aborted, &[0, 1, 2]), Reply::Drop);
    assert_eq!(ids(&s.assign(&[0, 1, 2])), [(2, msg_id.as_str())]);
    assert!(failures(&mut s).is_empty());
}

#[test]
fn a_task_with_a_timeout_is_never_prefetched() {
    let mut s = Scheduler::default();
    s.submit(task("a", json!({})));
    s.submit(task("t", json!({"timeout": 5})));
    assert_eq!(ids(&s.assign(&[0])), [(0, "a")]);
    assert_eq!(s.queued(), 1);
}

#[test]
fn targets_restrict_and_others_pass_a_waiting_task() {
    let mut s = with_hwm(2);
    s.submit(task("only-3", json!({"targets": [3]})));
    s.submit(task("any", json!({})));
    assert_eq!(ids(&s.assign(&[0, 1])), [(0, "any")]);
    assert_eq!(s.queued(), 1);
    s.engine_lost(7, "gone", &[0, 1]);
    assert_eq!(
        failures(&mut s),
        [(
            "only-3".into(),
            Why::NoEngine("no engine it may run on is alive".into())
        )]
    );
    assert_eq!(s.queued(), 0);
}

#[test]
fn a_dead_engines_running_task_retries_or_fails_and_the_rest_go_back() {
    let mut s = with_hwm(1);
    s.submit(task("once", json!({})));
    s.submit(task("behind", json!({})));
    s.submit(task("twice", json!({"retries": 1})));
    assert_eq!(ids(&s.assign(&[0])), [(0, "once"), (0, "behind")]);
    s.engine_lost(0, "killed", &[]);
    let failed = failures(&mut s);
    assert_eq!(failed.len(), 1, "only the task it was running");
    assert_eq!(failed[0].0, "once");
    assert!(
        matches!(&failed[0].1, Why::EngineDied { engine: 0, reason } if reason.contains("Engine 0 died"))
    );
    assert_eq!(ids(&s.assign(&[1])), [(1, "behind"), (1, "twice")]);
    s.engine_lost(1, "killed", &[]);
    assert_eq!(failures(&mut s)[0].0, "behind");
    let again = s.assign(&[2]);
    assert_eq!(ids(&again), [(2, "twice")]);
    assert_eq!(again[0].1.retries, 1, "it never started: no retry spent");
}

#[test]
fn a_failed_task_with_retries_runs_again_on_another_engine() {
    let mut s = with_hwm(1);
    s.submit(task("t", json!({"retries": 5})));
    assert_eq!(ids(&s.assign(&[0, 1])), [(0, "t")]);
    assert_eq!(s.reply(0, &answer("t", false, true), &[0, 1]), Reply::Drop);
    assert_eq!(
        ids(&s.assign(&[0, 1])),
        [(1, "t")],
        "never the engine that failed it"
    );
    // Every engine failed it and it has no timeout to wait for a new one:
    // its error is the answer.
    assert_eq!(
        s.reply(1, &answer("t", false, true), &[0, 1]),
        Reply::Forward
    );
    // With a timeout it waits for a new engine, then times out.
    s.submit(task("w", json!({"retries": 5, "timeout": 0.01})));
    assert_eq!(ids(&s.assign(&[0])), [(0, "w")]);
    assert_eq!(s.reply(0, &answer("w", false, true), &[0]), Reply::Drop);
    assert!(s.assign(&[0]).is_empty());
    s.expire(Instant::now() + Duration::from_millis(50));
    assert!(matches!(&failures(&mut s)[..], [(id, Why::Timeout(_))] if id == "w"));
}

#[test]
fn unmet_functional_dependencies_try_other_engines() {
    let mut s = with_hwm(1);
    s.submit(task("t", json!({"targets": [0, 1]})));
    assert_eq!(ids(&s.assign(&[0, 1, 2])), [(0, "t")]);
    assert_eq!(
        s.reply(0, &answer("t", false, false), &[0, 1, 2]),
        Reply::Drop
    );
    assert_eq!(ids(&s.assign(&[0, 1, 2])), [(1, "t")]);
    assert_eq!(
        s.reply(1, &answer("t", false, false), &[0, 1, 2]),
        Reply::Drop
    );
    assert!(matches!(&failures(&mut s)[..], [(id, Why::Impossible(_))] if id == "t"));
}

#[test]
fn after_waits_for_its_dependencies_in_order() {
    let mut s = with_hwm(4);
    s.submit(task("a", json!({})));
    s.submit(task("b", json!({})));
    s.submit(task("c", json!({"after": ["a", "b"]})));
    s.submit(task("d", json!({"after": ["c"]})));
    assert_eq!(ids(&s.assign(&[0, 1])), [(0, "a"), (1, "b")]);
    done(&mut s, 0, "a", true);
    assert!(s.assign(&[0, 1]).is_empty(), "c still waits for b");
    done(&mut s, 1, "b", true);
    assert_eq!(ids(&s.assign(&[0, 1])), [(0, "c")]);
    done(&mut s, 0, "c", true);
    assert_eq!(ids(&s.assign(&[0, 1])), [(1, "d")]);
    assert!(failures(&mut s).is_empty());
}

#[test]
fn impossible_and_invalid_dependencies_fail() {
    let mut s = with_hwm(4);
    s.submit(task("x", json!({"after": ["nobody"]})));
    assert!(matches!(&failures(&mut s)[..], [(id, Why::Invalid(_))] if id == "x"));
    s.submit(task("a", json!({})));
    s.submit(task("needs-a", json!({"after": ["a"]})));
    s.submit(task("after-that", json!({"after": ["needs-a"]})));
    s.submit(task(
        "cleanup",
        json!({"after": {"dependencies": ["a"], "success": false, "failure": true}}),
    ));
    assert_eq!(ids(&s.assign(&[0])), [(0, "a")]);
    done(&mut s, 0, "a", false);
    let failed = failures(&mut s);
    let names: Vec<&str> = failed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        names,
        ["needs-a", "after-that"],
        "a failure spoils the chain"
    );
    assert!(failed
        .iter()
        .all(|(_, why)| matches!(why, Why::Impossible(_))));
    assert_eq!(ids(&s.assign(&[0])), [(0, "cleanup")]);
    // Submitted after the failure: impossible at once.
    s.submit(task("late", json!({"after": ["a"]})));
    assert!(matches!(&failures(&mut s)[..], [(id, Why::Impossible(_))] if id == "late"));
}

#[test]
fn follow_runs_where_its_dependencies_ran() {
    let mut s = with_hwm(4);
    s.submit(task("a", json!({})));
    s.submit(task("other", json!({})));
    let given = s.assign(&[0, 1, 2]);
    let a = given[0].0;
    done(&mut s, a, "a", true);
    s.submit(task("f", json!({"follow": ["a"]})));
    assert_eq!(
        ids(&s.assign(&[0, 1, 2])),
        [(a, "f")],
        "not the idle engine"
    );
    done(&mut s, a, "f", true);
    s.submit(task("b", json!({})));
    let b = s.assign(&[0, 1, 2]);
    assert_ne!(b[0].0, a);
    done(&mut s, b[0].0, "b", true);
    s.submit(task("both", json!({"follow": ["a", "b"]})));
    assert!(matches!(&failures(&mut s)[..], [(id, Why::Impossible(_))] if id == "both"));
}

#[test]
fn waiting_tasks_time_out_and_running_ones_do_not() {
    let mut s = Scheduler::default();
    s.submit(task("long", json!({"timeout": 0.01})));
    s.submit(task("queued", json!({"timeout": 0.01})));
    assert_eq!(ids(&s.assign(&[0])), [(0, "long")]);
    assert!(s.next_deadline().is_some());
    s.expire(Instant::now() + Duration::from_millis(50));
    assert!(matches!(&failures(&mut s)[..], [(id, Why::Timeout(_))] if id == "queued"));
    done(&mut s, 0, "long", true);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn abort_takes_a_clients_waiting_tasks() {
    let mut s = Scheduler::default();
    s.submit(client_task(b"me", "running", json!({})));
    s.submit(client_task(b"me", "q1", json!({})));
    s.submit(client_task(b"me", "q2", json!({})));
    s.submit(client_task(b"other", "theirs", json!({})));
    s.submit(client_task(b"me", "blocked", json!({"after": ["q1"]})));
    assert_eq!(ids(&s.assign(&[0])), [(0, "running"), (0, "q1")]);
    assert_eq!(
        s.abort(&Bytes::from_static(b"me"), &["q2".into(), "running".into()]),
        [(0, vec!["running".to_string()])]
    );
    assert_eq!(failures(&mut s), [("q2".into(), Why::Aborted)]);
    // q1 waits on the engine: the engine aborts it.
    assert_eq!(
        s.abort(&Bytes::from_static(b"me"), &["q1".into()]),
        [(0, vec!["q1".to_string()])]
    );
    let aborted = ReplyInfo {
        msg_id: "q1".into(),
        ok: false,
        dependencies_met: true,
        aborted: true,
    };
    assert_eq!(s.reply(0, &aborted, &[0]), Reply::Forward);
    let failed = failures(&mut s);
    assert!(
        matches!(&failed[..], [(id, Why::Impossible(_))] if id == "blocked"),
        "its dependent fails with it"
    );
    s.submit(client_task(b"me", "q3", json!({})));
    s.abort(&Bytes::from_static(b"me"), &[]);
    assert_eq!(
        failures(&mut s),
        [("q3".into(), Why::Aborted)],
        "all of mine"
    );
    assert_eq!(s.queued(), 1, "the other client's task stays");
}

#[test]
fn schemes_spread_tasks_and_pure_has_no_high_water_mark() {
    for name in scheme::SCHEMES {
        let mut s = Scheduler::new(SchedulerSpec {
            scheme: name.parse().unwrap(),
            hwm: 1,
            ..Default::default()
        });
        for i in 0..8 {
            s.submit(task(&i.to_string(), json!({})));
        }
        let given = s.assign(&[0, 1, 2, 3]);
        let engines: HashSet<u32> = given.iter().map(|(e, _)| *e).collect();
        if *name == "pure" {
            assert_eq!(given.len(), 8, "{name}");
            assert_eq!(engines.len(), 4, "{name}: round-robin");
        } else {
            assert_eq!(given.len(), 8, "{name}: 4 running, 4 prefetched");
            assert_eq!(engines.len(), 4, "{name}: hwm 1 fills every engine");
            let first: HashSet<u32> = given[..4].iter().map(|(e, _)| *e).collect();
            assert_eq!(
                first.len(),
                4,
                "{name}: every engine runs one before any gets two"
            );
        }
    }
}

#[test]
fn replies_say_what_they_answer_and_how_it_went() {
    let mut frames = vec![
        Bytes::from_static(b"engine"),
        Bytes::from_static(b"client"),
        Bytes::from_static(b"<IDS|MSG>"),
        Bytes::from_static(b"sig"),
        Bytes::from(json!({"msg_type": "apply_reply"}).to_string()),
        Bytes::from(json!({"msg_id": "m1"}).to_string()),
        Bytes::from(json!({"status": "error", "dependencies_met": false}).to_string()),
    ];
    let info = reply_info(&frames, 2).unwrap();
    assert_eq!(
        info,
        ReplyInfo {
            msg_id: "m1".into(),
            ok: false,
            dependencies_met: false,
            aborted: false
        }
    );
    frames[6] = Bytes::from_static(b"{}");
    assert!(reply_info(&frames, 2).unwrap().ok);
    let mut output = frames.clone();
    output[4] = Bytes::from(json!({"msg_type": "stream"}).to_string());
    assert_eq!(reply_info(&output, 2), None);
    assert_eq!(reply_info(&frames[..4], 2), None);
}

#[test]
fn a_task_taken_back_and_given_to_the_same_engine_is_marked_for_resending() {
    let mut s = Scheduler::default();
    for id in ["a", "b"] {
        s.submit(task(id, json!({})));
    }
    assert_eq!(ids(&s.assign(&[0])), [(0, "a"), (0, "b")]);
    assert!(!s.running[&0][1].resend);
    // Engine 1 comes and goes before b is taken back.
    assert!(s.assign(&[0, 1]).is_empty());
    assert_eq!(s.reclaim(&[0, 1], later()), [(0, "b".to_string())]);
    s.engine_lost(1, "gone", &[0]);
    let aborted = ReplyInfo {
        msg_id: "b".into(),
        ok: false,
        dependencies_met: true,
        aborted: true,
    };
    assert_eq!(s.reply(0, &aborted, &[0]), Reply::Drop);
    done(&mut s, 0, "a", true);
    let again = s.assign(&[0]);
    assert_eq!(ids(&again), [(0, "b")]);
    assert!(
        again[0].1.resend,
        "the engine saw this request: it must be signed anew"
    );
}
