"""The analyzer on hand-written Chinese, English and mixed strings."""

import bm25s
import pytest
import Stemmer

from retrieval.analysis import Analyzer, cjk_share, language_warning
from retrieval.errors import UsageError

jieba = pytest.importorskip("jieba")


def test_english_terms_are_bm25s_own_tokens_as_before():
    text = "The runners were running fast, a b c"
    expected = bm25s.tokenize([text], stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False,
                              show_progress=False)
    assert Analyzer().tokenize([text]) == expected == [["runner", "were", "run", "fast"]]
    assert Analyzer().segments("a b-c, don't") == ["a", "b", "c", "don", "t"]  # what a length counts


def test_jieba_gives_words_and_the_words_inside_them():
    tokens = Analyzer("jieba", None, None).tokenize(["中华人民共和国国务院"])[0]
    assert {"中华人民共和国国务院", "国务院", "共和国", "人民"} <= set(tokens)


def test_jieba_keeps_latin_words_of_mixed_text_and_drops_stop_words():
    zh = Analyzer("jieba", None, "zh")
    # 我们 and 用 are Chinese stop words; the Latin words stay whole and lower-cased
    assert zh.tokenize(["我们用Python写BM25检索系统"]) == [["python", "写", "bm25", "检索", "系统", "检索系统"]]
    assert zh.segments("我们用Python写BM25检索系统") == ["我们", "用", "python", "写", "bm25", "检索", "系统", "检索系统"]
    # a stemmer applies to the Latin terms only
    assert Analyzer("jieba", "english", "zh").tokenize(["跑步running很快"]) == [["跑步", "run", "很快"]]


def test_full_width_letters_and_digits_fold_to_ascii():
    assert Analyzer("jieba", None, None).tokenize(["ＢＭ２５"]) == [["bm25"]]
    assert Analyzer("bigrams", None, None).tokenize(["ＢＭ２５"]) == [["bm25"]]


def test_bigrams_pair_each_chinese_run_and_keep_latin_words():
    bigrams = Analyzer("bigrams", None, None)
    assert bigrams.tokenize(["我爱北京天安门"]) == [["我爱", "爱北", "北京", "京天", "天安", "安门"]]
    assert bigrams.tokenize(["用Python写BM25代码"]) == [["用", "python", "写", "bm25", "代码"]]
    assert bigrams.segments("你好，世界！") == ["你好", "世界"]  # punctuation splits runs


def test_text_with_no_term_left_gives_an_empty_list_not_an_error():
    for analyzer in (Analyzer("jieba", None, "zh"), Analyzer("bigrams", None, "zh"), Analyzer()):
        assert analyzer.tokenize(["", "，。！", "的"]) == [[], [], []]


def test_an_unknown_segmenter_is_refused_with_the_allowed_ones():
    with pytest.raises(UsageError, match=r"expected one of \['words', 'jieba', 'bigrams'\], found 'spaces'"):
        Analyzer("spaces")


def test_chinese_text_under_the_space_analyzer_is_warned_about():
    chinese = ["印控克什米尔地区寺庙踩踏事故", "RCEP具体包括哪些国家"]
    assert cjk_share(["abc", "中文"]) == pytest.approx(2 / 5)
    assert 'language = "zh"' in language_warning(chinese, "words")
    assert language_warning(chinese, "jieba") is None
    assert language_warning(["plain English text", "and more"], "words") is None
