"""The browser fixture itself works: a page renders and its script runs."""



def test_chromium_renders_a_local_file(page, tmp_path):
    f = tmp_path / "x.html"
    f.write_text("<p id=a>hi</p><script>document.getElementById('a').textContent='ran'</script>")
    page.goto(f.as_uri())
    assert page.text_content("#a") == "ran"
