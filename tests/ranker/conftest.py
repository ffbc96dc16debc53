"""A generated 32-topic dataset and its pipeline config, shared by the pipeline and Scorer tests."""

import numpy as np
import pytest

from tests.conftest import write_beir

TOPICS = ["volcano magma eruption", "chess knight opening", "sourdough bread starter", "qubit quantum gate",
          "tide moon gravity", "honey bee colony", "glacier ice melt", "jazz saxophone solo",
          "marathon runner training", "comet tail orbit", "coral reef bleaching", "violin string bow",
          "desert cactus water", "tornado storm wind", "pasta tomato sauce", "rocket fuel engine",
          "owl night hunting", "printing press paper", "vaccine immune response", "bridge steel cable",
          "penguin antarctic ice", "coffee bean roast", "earthquake fault plate", "satellite signal orbit",
          "tea leaf ferment", "piano key chord", "wolf pack forest", "camera lens light", "salt ocean water",
          "robot arm sensor", "cheese milk culture", "kite wind string"]


def generated_dataset(folder, *, graded: bool = False):
    """32 topics: one relevant document per topic (with a date), four distractors sharing one word
    (``graded``: the relevant document judged 2 and the first distractor 1, which BM25 ranks anywhere)."""
    rng = np.random.default_rng(0)
    docs, queries, qrels = [], [], {"train": [], "test": []}
    vocab = sorted({w for t in TOPICS for w in t.split()})
    for i, topic in enumerate(TOPICS):
        words = topic.split()
        docs.append({"_id": f"rel{i}", "title": topic, "text": " ".join(words * 3),
                     "metadata": {"date": f"{1990 + i}-06-01"}})
        for j in range(4):  # distractors share one topic word
            filler = " ".join(rng.choice(vocab, 6))
            docs.append({"_id": f"dis{i}_{j}", "title": "", "text": f"{words[j % 3]} {filler} {words[j % 3]} " * 2,
                         "metadata": {"date": f"{1995 + j + i % 7}-01-15"} if j % 2 else {}})
        queries.append({"_id": f"q{i}", "text": " ".join(words[:2] + [words[2]])})
        split = qrels["train" if i < 22 else "test"]
        split.append((f"q{i}", f"rel{i}", 2 if graded else 1))
        if graded:
            split.append((f"q{i}", f"dis{i}_0", 1))
    return write_beir(folder, docs=docs, queries=queries, qrels=qrels)


#: Chinese topics of three dictionary words each, for the Chinese pipeline (written without spaces).
TOPICS_ZH = ["火山 岩浆 喷发", "象棋 骑士 开局", "面包 酵母 发酵", "量子 计算 芯片", "潮汐 月亮 引力", "蜜蜂 蜂巢 花粉",
             "冰川 融化 海平面", "爵士 萨克斯 独奏", "马拉松 选手 训练", "彗星 尾巴 轨道", "珊瑚 礁石 白化",
             "小提琴 琴弦 演奏", "沙漠 仙人掌 干旱", "龙卷风 暴雨 预警", "番茄 酱汁 面条", "火箭 燃料 发动机",
             "猫头鹰 夜间 捕猎", "印刷 纸张 油墨", "疫苗 免疫 接种", "大桥 钢索 施工", "企鹅 南极 冰山",
             "咖啡 烘焙 咖啡豆", "地震 断层 板块", "卫星 信号 发射", "茶叶 绿茶 采摘", "钢琴 和弦 键盘"]


def generated_dataset_zh(folder):
    """26 Chinese topics: one relevant passage each (its three words, with a Latin product name in four of
    them), four distractors sharing one topic word; 18 training queries, 8 test."""
    rng = np.random.default_rng(0)
    docs, queries, qrels = [], [], {"train": [], "test": []}
    vocab = sorted({w for t in TOPICS_ZH for w in t.split()})
    for i, topic in enumerate(TOPICS_ZH):
        words = topic.split()
        latin = f"Model{i}X" if i % 7 == 0 else ""
        docs.append({"_id": f"rel{i}", "title": "", "text": "，".join(["".join(words)] * 3) + latin + "。"})
        for j in range(4):
            filler = "".join(rng.choice(vocab, 6))
            docs.append({"_id": f"dis{i}_{j}", "title": "", "text": f"{words[j % 3]}{filler}，{words[j % 3]}。"})
        queries.append({"_id": f"q{i}", "text": "".join(words) + "的情况"})
        qrels["train" if i < 18 else "test"].append((f"q{i}", f"rel{i}", 1))
    return write_beir(folder, docs=docs, queries=queries, qrels=qrels)


def write_config(path, dataset, run_dir, *, extractors: str, ranker: str = "", retrieval: str = "") -> None:
    """A BM25-first-stage config over ``dataset`` (cheap: seconds), with the given TOML sections."""
    path.write_text(f"""
[dataset]
name = "{dataset}"
[retrieval]
systems = ["bm25"]
k = 20
depth = 20
{retrieval}
[features]
candidates = "bm25"
[features.extractors.first_stage]
retrievers = []
{extractors}
{ranker}
[run]
dir = "{run_dir}"
""")


#: The generated pipeline's ranker settings (small: the dataset has 22 training queries).
RANKER = """[ranker]
valid_fraction = 0.2
[ranker.params]
n_estimators = 40
min_data_in_leaf = 5
num_leaves = 7"""


@pytest.fixture
def generated(tmp_path):
    folder = generated_dataset(tmp_path / "gen")
    config = tmp_path / "gen.toml"
    write_config(config, folder, tmp_path / "run",
                 extractors="[features.extractors.bm25]\n[features.extractors.coverage]\n[features.extractors.length]",
                 ranker=RANKER + """
[ranker.variants]
first_stage_only = ["fs_rank", "fs_score"]""")
    return config, tmp_path / "run"


def run_steps(config, steps=("retrieve", "features", "train")) -> None:
    """Run the pipeline's ``steps`` on ``config`` through the CLI, each expected to succeed."""
    from ranker.cli import main

    for step in steps:
        assert main([step, "--config", str(config)] + (["--quiet"] if step == "features" else [])) == 0


def lexical_run(tmp, steps=("retrieve", "features", "train"), extra_extractors: str = ""):
    """A graded generated run with BM25 candidates and the lexical features (plus ``extra_extractors``),
    the model served as trained (guard "warn"); returns (run folder, dataset folder)."""
    folder = generated_dataset(tmp / "gen", graded=True)
    config = tmp / "gen.toml"
    write_config(config, folder, tmp / "run", ranker=RANKER.replace("[ranker]", '[ranker]\nguard = "warn"'),
                 extractors="[features.extractors.bm25]\n[features.extractors.coverage]\n[features.extractors.length]\n"
                            + extra_extractors)
    run_steps(config, steps)
    return tmp / "run", folder

