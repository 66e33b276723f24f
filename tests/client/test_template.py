"""The Go-template subset of ``--format``: fields, functions, control structures, Go's printing, tables."""

from __future__ import annotations

import io

import pytest

from engine.client.template import Template, TemplateError, go_str, render, render_rows

DOC = {
    "Id": "abc",
    "Name": "/web",
    "State": {"Running": True, "Pid": 42, "ExitCode": 0, "Health": None},
    "Config": {"Cmd": ["sh", "-c", "x"], "Labels": {"b": "2", "a": "1"}, "Env": []},
    "Mounts": [{"Source": "/a", "Destination": "/x"}, {"Source": "/b", "Destination": "/y"}],
    "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "81/tcp": None}},
}


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("{{.Id}}", "abc"),
        ("{{.State.Running}} {{.State.Pid}}", "true 42"),
        ("{{.Config.Cmd}}", "[sh -c x]"),
        ("{{.Config.Labels}}", "map[a:1 b:2]"),
        ("{{.Config.Env}}", "[]"),
        ("{{.State.Health}}", "<nil>"),
        ("{{.Nope}}", "<no value>"),
        ("{{json .Config.Labels}}", '{"b":"2","a":"1"}'),
        ("{{json .Mounts}}", '[{"Source":"/a","Destination":"/x"},{"Source":"/b","Destination":"/y"}]'),
        ('{{json "a<b"}}', '"a<b"'),
        ("{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}", "/a:/x /b:/y "),
        ("{{range $i, $m := .Mounts}}{{$i}}={{$m.Source}};{{end}}", "0=/a;1=/b;"),
        ("{{range $k, $v := .Config.Labels}}{{$k}}{{$v}}{{end}}", "a1b2"),
        (
            "{{range $p, $conf := .NetworkSettings.Ports}}{{if $conf}}{{$p}}->{{(index $conf 0).HostPort}} {{end}}{{end}}",
            "80/tcp->8080 ",
        ),
        ("{{range .Config.Env}}x{{else}}empty{{end}}", "empty"),
        ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
        ("{{if not .State.Running}}down{{else if .State.Pid}}pid{{else}}?{{end}}", "pid"),
        ("{{if eq .State.Pid 41 42}}yes{{end}}", "yes"),
        ("{{if and .State.Running (gt .State.Pid 10)}}big{{end}}", "big"),
        ("{{or .Nope .Id}}", "abc"),
        ("{{with .State}}{{.Pid}}{{end}}", "42"),
        ("{{with .Nope}}x{{else}}none{{end}}", "none"),
        ('{{index .Config.Labels "a"}}', "1"),
        ("{{index .Config.Cmd 1}}", "-c"),
        ("{{len .Mounts}}", "2"),
        ('{{join .Config.Cmd " "}}', "sh -c x"),
        ('{{split "a,b" ","}}', "[a b]"),
        ("{{.Name | upper}}", "/WEB"),
        ('{{lower "ABC"}} {{title "hello world"}}', "abc Hello World"),
        ("{{truncate .Id 2}} {{pad .Id 1 2}}|", "ab  abc  |"),
        ('{{printf "%s:%d" .Name .State.Pid}}', "/web:42"),
        ('{{printf "%-6s|" .Id}}', "abc   |"),
        ("{{println .Id}}", "abc\n"),
        ("{{$n := .Name}}{{$n}}", "/web"),
        ("{{/* a comment */}}x", "x"),
        ("a  {{- .Id -}}  b", "aabcb"),
    ],
)
def test_render(fmt, expected):
    assert render(fmt, DOC) == expected


@pytest.mark.parametrize("fmt", ["{{.Id", "{{if .Id}}x", "{{end}}", "{{nosuchfunc .Id}}", "{{.Id | }}", "{{else}}"])
def test_bad_templates(fmt):
    with pytest.raises(TemplateError):
        render(fmt, DOC)


def test_execution_errors():
    with pytest.raises(TemplateError, match="can't evaluate field"):
        render("{{.Config.Cmd.Foo}}", DOC)
    with pytest.raises(TemplateError, match="index out of range"):
        render("{{index .Config.Cmd 9}}", DOC)


def test_go_printing():
    assert go_str(1.0) == "1" and go_str(1.5) == "1.5" and go_str(False) == "false"
    assert go_str({"b": [1, 2], "a": {"x": None}}) == "map[a:map[x:<nil>] b:[1 2]]"


class Row:
    def __init__(self, ident, name):
        self.ident, self.name = ident, name

    def ID(self):
        return self.ident

    def Names(self):
        return self.name

    def Label(self, key):
        return f"label-{key}"

    def to_json(self):
        return {"ID": self.ident, "Names": self.name}


def test_methods_and_json_of_objects():
    assert render('{{.ID}} {{.Label "x"}}', Row("1", "a")) == "1 label-x"
    assert render("{{json .}}", Row("1", "a")) == '{"ID":"1","Names":"a"}'


def test_table_rows_have_a_header_and_aligned_columns():
    out = io.StringIO()
    render_rows(
        "table {{.ID}}\\t{{.Names}}\\t{{.ID}}",
        [Row("1", "alpha"), Row("22", "b")],
        {"ID": "CONTAINER ID", "Names": "NAMES"},
        out,
    )
    assert out.getvalue() == (
        "CONTAINER ID   NAMES     CONTAINER ID\n1              alpha     1\n22             b         22\n"
    )
    out = io.StringIO()
    render_rows("{{.ID}}:{{.Names}}", [Row("1", "a")], {}, out)
    assert out.getvalue() == "1:a\n"
    out = io.StringIO()
    render_rows("json", [Row("1", "a")], {}, out)
    assert out.getvalue() == '{"ID":"1","Names":"a"}\n'
    out = io.StringIO()
    render_rows("table {{.ID}}\\t{{upper .Names}}", [], {"ID": "CONTAINER ID", "Names": "NAMES"}, out)
    assert out.getvalue() == "CONTAINER ID   NAMES\n"


def test_template_object_is_reusable():
    tmpl = Template("{{.Id}}-{{.State.Pid}}")
    assert tmpl.execute(DOC) == "abc-42"
    assert tmpl.execute({"Id": "x", "State": {"Pid": 1}}) == "x-1"
