/**
 * A strict parser for the XML subset an SVG file uses (declaration, elements, attributes in
 * double or single quotes, text, comments, the five predefined entities and numeric character
 * references). Anything not well-formed — an unclosed or mismatched tag, an unquoted or repeated
 * attribute, a bare '<' or '&' in text, content after the root — throws with its offset. For
 * tests that check files the benches write; not a general XML parser (no DTD, CDATA, PIs other
 * than the declaration).
 */
export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
}

const NAME = /[A-Za-z_:][-A-Za-z0-9_:.]*/y;

function decode(s: string, at: number): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-z]+);|&/g, (m, ref: string | undefined) => {
    if (!ref) throw new Error(`xml: bare '&' near offset ${at}`);
    if (ref[0] === '#') return String.fromCodePoint(ref[1] === 'x' ? parseInt(ref.slice(2), 16) : Number(ref.slice(1)));
    const v = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[ref];
    if (v === undefined) throw new Error(`xml: unknown entity &${ref}; near offset ${at}`);
    return v;
  });
}

export function parseXml(src: string): XmlElement {
  let i = 0;
  const fail = (what: string): never => {
    throw new Error(`xml: ${what} at offset ${i}: ${JSON.stringify(src.slice(i, i + 40))}`);
  };
  const ws = () => { while (i < src.length && /\s/.test(src[i])) i++; };
  const name = (): string => {
    NAME.lastIndex = i;
    const m = NAME.exec(src);
    if (!m) fail('expected a name');
    i += m![0].length;
    return m![0];
  };
  const skipMisc = () => {
    for (;;) {
      ws();
      if (src.startsWith('<!--', i)) {
        const end = src.indexOf('-->', i + 4);
        if (end < 0) fail('unclosed comment');
        i = end + 3;
      } else return;
    }
  };
  const element = (): XmlElement => {
    if (src[i] !== '<') fail("expected '<'");
    i++;
    const el: XmlElement = { name: name(), attrs: {}, children: [], text: '' };
    for (;;) {
      const before = i;
      ws();
      if (src.startsWith('/>', i)) {
        i += 2;
        return el;
      }
      if (src[i] === '>') {
        i++;
        break;
      }
      if (i === before) fail('expected whitespace between attributes');
      const key = name();
      ws();
      if (src[i] !== '=') fail(`attribute ${key} without '='`);
      i++;
      ws();
      const q = src[i];
      if (q !== '"' && q !== "'") fail(`attribute ${key} not quoted`);
      const end = src.indexOf(q, i + 1);
      if (end < 0) fail(`attribute ${key} not closed`);
      const raw = src.slice(i + 1, end);
      if (raw.includes('<')) fail(`'<' in attribute ${key}`);
      if (key in el.attrs) fail(`attribute ${key} repeated`);
      el.attrs[key] = decode(raw, i);
      i = end + 1;
    }
    for (;;) {
      if (src.startsWith('</', i)) {
        i += 2;
        const closing = name();
        if (closing !== el.name) fail(`</${closing}> closes <${el.name}>`);
        ws();
        if (src[i] !== '>') fail("expected '>'");
        i++;
        return el;
      }
      if (src.startsWith('<!--', i)) {
        skipMisc();
        continue;
      }
      if (src[i] === '<') {
        el.children.push(element());
        continue;
      }
      const next = src.indexOf('<', i);
      if (next < 0) fail(`<${el.name}> not closed`);
      el.text += decode(src.slice(i, next), i);
      i = next;
    }
  };
  if (src.startsWith('\uFEFF')) i = 1;
  if (src.startsWith('<?xml', i)) {
    const end = src.indexOf('?>', i);
    if (end < 0) fail('unclosed declaration');
    i = end + 2;
  }
  skipMisc();
  const root = element();
  skipMisc();
  if (i !== src.length) fail('content after the root element');
  return root;
}

/** Every element below (and including) `el`, depth first. */
export function walk(el: XmlElement): XmlElement[] {
  return [el, ...el.children.flatMap(walk)];
}
