// Compose: live character count while typing (the server preview also shows it).
document.addEventListener("input", (event) => {
  if (event.target.id !== "text") return;
  const counter = document.getElementById("compose-chars");
  if (counter) counter.textContent = String(event.target.value.length);
});
