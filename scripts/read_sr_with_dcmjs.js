// Reads a DeepWML DICOM SR (deepwml_predict --dicom-sr, deepwml_compare --dicom-sr) with dcmjs, the DICOM library
// OHIF and Cornerstone build on, and walks its TID 1500 tree as a viewer does: an independent check (not highdicom,
// which wrote it) that the report parses, its groups carry tracking identifiers and numbers, and every outline is a
// closed SCOORD polyline on a referenced image. A development check, not part of the Python test suite:
//
//     npm install --prefix /tmp/dcmjs dcmjs@0.52.2
//     NODE_PATH=/tmp/dcmjs/node_modules node scripts/read_sr_with_dcmjs.js OUT/CASE_sr.dcm
const fs = require("fs");
const dcmjs = require("dcmjs");
const path = process.argv[2];
const buf = fs.readFileSync(path);
const dicomData = dcmjs.data.DicomMessage.readFile(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicomData.dict);
const asList = (x) => (x === undefined ? [] : Array.isArray(x) ? x : [x]);
const meaning = (item) => asList(item.ConceptNameCodeSequence)[0]?.CodeMeaning;
console.log("SOP class", ds.SOPClassUID, "template", asList(ds.ContentTemplateSequence)[0]?.TemplateIdentifier);
const imaging = asList(ds.ContentSequence).find((i) => meaning(i) === "Imaging Measurements");
const groups = asList(imaging.ContentSequence);
let polylines = 0, withImage = 0, nums = 0;
for (const g of groups) {
  for (const item of asList(g.ContentSequence)) {
    if (item.ValueType === "NUM") nums++;
    if (item.ValueType === "SCOORD") {
      if (item.GraphicType !== "POLYLINE") throw new Error("graphic type " + item.GraphicType);
      const pts = item.GraphicData;
      if (pts.length % 2 || pts[0] !== pts[pts.length - 2] || pts[1] !== pts[pts.length - 1]) throw new Error("not closed");
      polylines++;
      const src = asList(item.ContentSequence).find((c) => c.ValueType === "IMAGE");
      if (src && asList(src.ReferencedSOPSequence)[0]?.ReferencedSOPInstanceUID) withImage++;
    }
  }
}
const trackers = groups.map((g) => asList(g.ContentSequence).find((c) => meaning(c) === "Tracking Identifier")?.TextValue);
console.log("groups", groups.length, "first trackers", trackers.slice(0, 3).join(" | "), "NUM items", nums,
            "closed polylines", polylines, "each on an image", withImage === polylines);
