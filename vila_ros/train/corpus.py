"""The text the from-scratch default model's tokenizer is trained on: every sentence, question, prompt and template's
wording the simulator's ground truth and the instruction set produce (no rendering)."""
from __future__ import annotations

from vila_ros import tasks
from vila_ros.model.templates import IMAGE_PLACEHOLDER, TEMPLATES


def sim_corpus(count: int = 3000, seed: int = 0, num_frames: int = 8) -> list[str]:
    """Captions, QA, prompts, alert answers, instructions and templates of ``count`` training scenarios' clips."""
    from vila_ros.sim import clip_window, make_scenario, split_seeds
    from vila_ros.sim.writers import text_instructions

    lines: list[str] = []
    for s in split_seeds("train", count, 5_000_000 + seed):
        scenario = make_scenario(s)
        stamps = clip_window(scenario, s, num_frames)
        truth = scenario.truth(stamps)
        lines += [truth.caption, truth.static_caption, truth.alert_answer]
        lines += [f"{q['question']} {q['answer']}" for q in truth.qa]
    lines += [f"{q} {a}" for q, a in text_instructions()]
    lines += [tasks.DESCRIBE_PROMPT, tasks.ALERT_PROMPT]
    for t in TEMPLATES.values():
        lines.append(t.render([(IMAGE_PLACEHOLDER + "\n" + tasks.DESCRIBE_PROMPT, "yes")]))
    return lines
